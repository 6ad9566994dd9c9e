"""The inference metrics endpoint shows the work queue's backlog: the signal to add workers."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import nats
from faststream import FastStream
from faststream.nats import NatsBroker
from prometheus_client.parser import text_string_to_metric_families

from contracts import ids, subjects, topology
from contracts.events import GenerationRequested
from devstack.ports import free_port
from inference import InferenceSettings
from inference.metrics import install_metrics
from inference.work_queue import ensure_consumer


def pending(text: str) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("consumer") == topology.INFERENCE_CONSUMER:
                found[sample.name] = sample.value
    return found


async def test_pending_work_is_exported_for_scaling(nats_url: str) -> None:
    port = free_port()
    settings = InferenceSettings(nats_url=nats_url, metrics_port=port)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await topology.ensure_streams(js, settings)
    await ensure_consumer(js, settings)
    for n in range(3):  # queued while no worker runs
        request = GenerationRequested(
            message_id=f"r{n}",
            conversation_id="c",
            user_id="u",
            user_message_id=f"m{n}",
            content="hi",
            requested_at=datetime.now(UTC),
        )
        await js.publish(
            subjects.GENERATE,
            request.model_dump_json().encode(),
            headers={"Nats-Msg-Id": ids.msg_id("gen", "c", f"m{n}")},
        )
    app = FastStream(NatsBroker(nats_url))
    install_metrics(app, app.broker, settings)  # type: ignore[arg-type]
    await app.start()
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        await app.stop()
        await nc.close()
    assert response.status_code == 200
    assert pending(response.text) == {
        "livechat_consumer_pending": 3,
        "livechat_consumer_ack_pending": 0,
    }
