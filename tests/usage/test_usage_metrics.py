"""The usage service's Prometheus endpoint (LIVECHAT_METRICS_PORT)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import nats
from prometheus_client.parser import text_string_to_metric_families

from contracts import subjects, topology
from contracts.events import UsageReported
from devstack.ports import free_port
from usage import UsageSettings, create_app

Report = Callable[..., UsageReported]
TIMEOUT = 30.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_count_tokens_once_per_entry_and_show_the_consumer_backlog(
    nats_url: str, report: Report, tmp_path: Path
) -> None:
    port = free_port()
    settings = UsageSettings(nats_url=nats_url, data_dir=tmp_path / "d", metrics_port=port)
    nc = await nats.connect(nats_url)
    app = create_app(settings)
    await app.start()
    try:
        js = nc.jetstream()
        event = report(prompt=11, completion=7)
        for _ in range(2):  # delivered twice: counted once
            await js.publish(
                subjects.usage_reported(event.conversation_id, event.message_id),
                event.model_dump_json().encode(),
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = asyncio.get_running_loop().time() + TIMEOUT
            while True:
                info = await js.consumer_info(topology.USAGE_STREAM, topology.USAGE_CONSUMER)
                if info.num_pending == 0 and info.num_ack_pending == 0:
                    break
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            response = await http.get("/metrics")
            missing = await http.get("/other")
    finally:
        await app.stop()
        await nc.close()

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    labels = (("direction", "in"), ("model", "demo-1"), ("provider", "demo"))
    assert found[("livechat_tokens_total", labels)] == 11
    out = (("direction", "out"), ("model", "demo-1"), ("provider", "demo"))
    assert found[("livechat_tokens_total", out)] == 7
    attempts = (("outcome", "completed"), ("provider", "demo"))
    assert found[("livechat_generation_attempts_total", attempts)] == 1
    timing = (("model", "demo-1"), ("provider", "demo"))
    assert found[("livechat_time_to_first_token_seconds_count", timing)] == 1
    consumer = (("consumer", topology.USAGE_CONSUMER), ("stream", topology.USAGE_STREAM))
    assert found[("livechat_consumer_pending", consumer)] == 0
    assert missing.status_code == 404
