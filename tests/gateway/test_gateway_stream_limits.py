"""The file streams are bounded in bytes (LIVECHAT_STREAM_MAX_BYTES): a full chat or work
stream refuses a message with a clear 503 `storage_full` (nothing half-stored is
answered), the usage stream drops its oldest entries instead."""

from __future__ import annotations

import httpx
import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError

from contracts import subjects, topology
from gateway import GatewaySettings

LIMIT = 64 * 1024


async def _fill(js: JetStreamContext, subject: str) -> None:
    """Publish until the stream refuses even the smallest message (it is full)."""
    for size in (1024, 64, 1):
        for i in range(10_000):
            try:
                await js.publish(subject, b"x" * size, headers={"Nats-Msg-Id": f"{size}-{i}"})
            except APIError as exc:
                assert "maximum bytes" in str(exc.description)
                break
        else:
            raise AssertionError("the stream never filled up")


async def test_every_file_stream_is_bounded_by_the_setting(js: JetStreamContext, settings):
    await topology.ensure_streams(js, settings.model_copy(update={"stream_max_bytes": LIMIT}))
    for name, discard in (
        (topology.CHAT_STREAM, DiscardPolicy.NEW),
        (topology.WORK_STREAM, DiscardPolicy.NEW),
        (topology.USAGE_STREAM, DiscardPolicy.OLD),
        (topology.FEEDBACK_STREAM, DiscardPolicy.OLD),
    ):
        config = (await js.stream_info(name)).config
        assert config.max_bytes == LIMIT, name
        assert config.discard == discard, name
    assert GatewaySettings().stream_max_bytes == 1024**3  # the default: 1 GiB each


@pytest.mark.parametrize("stream", [topology.CHAT_STREAM, topology.WORK_STREAM])
async def test_a_full_stream_refuses_a_message_with_storage_full(
    js: JetStreamContext, settings, gateway_server, stream
):
    small = settings.model_copy(update={"stream_max_bytes": LIMIT})
    await topology.ensure_streams(js, small)
    subject = subjects.chat_user("filler") if stream == topology.CHAT_STREAM else subjects.GENERATE
    await _fill(js, subject)
    async with (
        gateway_server(stream_max_bytes=LIMIT, rpc_timeout_seconds=1.0) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        response = await client.post(
            "/v1/conversations/full/messages", json={"content": "hi", "id": "m-full"}
        )
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "storage_full"
    assert "full" in error["message"]
    assert error["message_id"] == "m-full"  # retried with it once there is room: not doubled
    assert response.headers["X-Message-Id"] == "m-full"
