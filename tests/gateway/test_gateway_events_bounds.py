"""The events stream is bounded in bytes and per conversation, oldest events dropped first:
a busy replay buffer never fills nats-server's memory, so every publish into it and
the in-memory rate-limit counters keep working."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from minutes import early_in_a_minute
from nats.js import JetStreamContext

from contracts import subjects, topology
from contracts.events import TokenEvent
from devstack.natsserver import NatsServer
from gateway import GatewaySettings

# nats-server's memory for JetStream, all streams and buckets together.
_SERVER_MEMORY = 8 * 1024 * 1024
_EVENTS_BYTES = 2 * 1024 * 1024
_PER_CONVERSATION = 500


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A nats-server with little JetStream memory (as a small production node has)."""
    store = str(tmp_path / "nats" / "jetstream")
    limited = f'jetstream {{\n  store_dir: "{store}"\n  max_memory_store: {_SERVER_MEMORY}\n}}'
    server = NatsServer(tmp_path / "nats", extra_config=limited)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(settings: GatewaySettings) -> GatewaySettings:
    return settings.model_copy(
        update={
            "events_max_bytes": _EVENTS_BYTES,
            "events_max_per_conversation": _PER_CONVERSATION,
            "rate_limit_per_minute": 100,
        }
    )


@pytest.fixture
async def busy_events(js: JetStreamContext) -> AsyncIterator[list[int]]:
    """Twice the server's memory in token events of many conversations; their sequences."""
    payload = "x" * 900
    sequences = []
    for n in range(2 * _SERVER_MEMORY // 1000):
        event = TokenEvent(message_id=f"reply{n % 40}", content=payload)
        ack = await js.publish(subjects.events(f"busy{n % 40}"), event.model_dump_json().encode())
        sequences.append(ack.seq)
    yield sequences


async def test_a_full_events_stream_drops_its_oldest_events_and_everything_keeps_working(
    gateway_url: str, js: JetStreamContext, worker: object, busy_events: list[int]
) -> None:
    info = await js.stream_info(topology.EVENTS_STREAM)
    assert info.state.bytes <= _EVENTS_BYTES
    # The newest events are kept, the oldest were dropped.
    assert info.state.last_seq == busy_events[-1]
    assert info.state.first_seq > busy_events[0]

    # The rate-limit counters (in memory too) still count, and the answer streams.
    await early_in_a_minute()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        sent = await client.post(
            "/v1/conversations/after/messages",
            json={"content": "hello"},
            headers={"Accept": "text/event-stream"},
        )
    assert sent.status_code == 200, sent.text
    assert sent.text.rstrip("\n").split("\n\n")[-1].split("\n")[1] == "event: done"


async def test_one_conversation_keeps_only_its_newest_events(
    js: JetStreamContext, gateway_url: str
) -> None:
    subject = subjects.events("chatty")
    for n in range(_PER_CONVERSATION + 50):
        event = TokenEvent(message_id="reply", content=str(n))
        await js.publish(subject, event.model_dump_json().encode())

    info = await js.stream_info(topology.EVENTS_STREAM, subjects_filter=subject)
    assert info.state.messages == _PER_CONVERSATION
    first = await js.get_msg(topology.EVENTS_STREAM, info.state.first_seq)
    assert TokenEvent.model_validate_json(first.data or b"").content == "50"
