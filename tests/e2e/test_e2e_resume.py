"""Resume across a gateway crash and from another gateway; a message id repeated late."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiclients import joined_tokens, sse_events
from httpx_sse import aconnect_sse
from stacks import FAST_ENV, dev_stack, extra_gateway, stored_messages, wait_ready

from devstack.natsserver import NatsServer
from devstack.runner import DevStack


class System:
    """The four services on a nats-server of the test's own, plus extra gateways."""

    def __init__(self, root: Path, **env: str) -> None:
        self.nats = NatsServer(root / "nats")
        self.root = root
        self.env = env
        self.stack: DevStack | None = None
        self.extra = ExitStack()

    def start(self) -> DevStack:
        self.nats.start()
        env = {**FAST_ENV, **self.env}
        self.stack = dev_stack(self.root / "stack", env, nats_url=self.nats.url)
        self.stack.start()
        return self.stack

    def another_gateway(self) -> str:
        """A second gateway process on the same NATS; its base URL."""
        env = {**FAST_ENV, **self.env}
        return self.extra.enter_context(extra_gateway(self.root / "gateway2", env, self.nats.url))

    def stop(self) -> None:
        self.extra.close()
        if self.stack is not None:
            self.stack.stop()
        self.nats.stop()


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    # Slow enough that the gateway dies in the middle of the answer.
    running = System(tmp_path, LIVECHAT_DEMO_TOKENS_PER_SECOND="20")
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def _resume(base_url: str, conversation: str, last_event_id: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=60) as client,
        aconnect_sse(
            client,
            "GET",
            f"/v1/conversations/{conversation}/events",
            headers={"Last-Event-ID": str(last_event_id)},
        ) as source,
    ):
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            data = json.loads(sse.data)
            assert sse.id == str(data["event_id"])
            events.append(data)
    return events


async def test_resume_after_the_gateway_dies_mid_stream(system: System) -> None:
    stack = system.stack
    assert stack is not None
    conversation = f"gw-{uuid.uuid4().hex[:8]}"
    seen: list[dict[str, Any]] = []
    body = {"content": "a long story about lighthouses"}
    with pytest.raises(httpx.TransportError):  # the gateway dies under the stream
        async for event in sse_events(stack.gateway_url, conversation, body):
            seen.append(event)
            if [e["type"] for e in seen].count("token") == 5:
                stack.kill("gateway")
    assert seen[-1]["type"] == "token"
    reply = seen[0]["message_id"]
    last_id = seen[-1]["event_id"]

    # Another gateway instance, then the crashed one restarted: both resume exactly.
    other = system.another_gateway()
    await wait_ready(other)
    from_other = await _resume(other, conversation, last_id)
    stack.restart("gateway")
    await wait_ready(stack.gateway_url)
    from_restarted = await _resume(stack.gateway_url, conversation, last_id)

    assert from_other == from_restarted
    assert from_other[-1]["type"] == "done"
    everything = seen + from_other
    event_ids = [e["event_id"] for e in everything]
    assert event_ids == sorted(set(event_ids)), "no duplicate, in order"
    messages = await stored_messages(stack.gateway_url, conversation, 2)
    assert messages[1]["status"] == "complete"
    assert joined_tokens(everything, reply) == messages[1]["content"]
    # Nothing in flight any more: a resume after the end is 204.
    async with httpx.AsyncClient(base_url=other, timeout=30) as client:
        idle = await client.get(
            f"/v1/conversations/{conversation}/events",
            params={"last_event_id": str(event_ids[-1])},
        )
    assert idle.status_code == 204


async def test_a_message_id_repeated_after_the_dedupe_window_is_answered_once(
    tmp_path: Path,
) -> None:
    system = System(tmp_path, LIVECHAT_DEDUPE_WINDOW_SECONDS="1")
    stack = system.start()
    try:
        conversation = f"dd-{uuid.uuid4().hex[:8]}"
        body = {"content": "say it once", "id": "client-msg-1"}
        url = f"/v1/conversations/{conversation}/messages"
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
            first = await client.post(url, json=body)
            assert first.status_code == 200, first.text
            await stored_messages(stack.gateway_url, conversation, 2)
            await asyncio.sleep(2.5)  # past the window: NATS no longer deduplicates it
            again = await client.post(url, json=body)
            events = []
            async with aconnect_sse(client, "POST", url, json=body) as source:
                async for sse in source.aiter_sse():
                    if sse.data:
                        assert sse.id is not None
                        events.append(json.loads(sse.data))
        assert again.status_code == 200, again.text
        assert again.json()["message"] == first.json()["message"]
        assert events[-1]["type"] == "done"
        assert (
            joined_tokens(events, first.json()["message"]["id"])
            == (first.json()["message"]["content"])
        )
        await asyncio.sleep(1.0)  # a wrongly republished request would be stored by now
        messages = await stored_messages(stack.gateway_url, conversation, 2)
        assert len(messages) == 2
    finally:
        system.stop()
