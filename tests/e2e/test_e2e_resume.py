"""Resume across a gateway crash and from another gateway; a message id repeated late."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apiclients import get_conversation, joined_tokens
from httpx_sse import aconnect_sse

from devstack.natsserver import NatsServer
from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings

ENV = {
    "LIVECHAT_DEMO_TTFT_MS": "30",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "200",
    "LIVECHAT_ACK_WAIT_SECONDS": "2",
    "LIVECHAT_HEARTBEAT_SECONDS": "0.5",
    "LIVECHAT_LOG_LEVEL": "WARNING",
}


def _environ(**extra: str) -> dict[str, str]:
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    environ.update(ENV)
    environ.update(extra)
    return environ


class System:
    """The four services on a nats-server of the test's own, plus extra gateways."""

    def __init__(self, root: Path, **env: str) -> None:
        self.nats = NatsServer(root / "nats")
        self.root = root
        self.env = env
        self.stack: DevStack | None = None
        self.extra: list[subprocess.Popen[bytes]] = []

    def start(self) -> DevStack:
        self.nats.start()
        port = free_port()
        data_dir = self.root / "stack"
        environ = _environ(
            LIVECHAT_HTTP_PORT=str(port),
            LIVECHAT_DATA_DIR=str(data_dir),
            LIVECHAT_NATS_URL=self.nats.url,
            **self.env,
        )
        settings = DevSettings(
            data_dir=data_dir, http_port=port, max_restarts=0, nats_url=self.nats.url
        )
        self.stack = DevStack(settings, env=environ)
        self.stack.start()
        return self.stack

    def another_gateway(self) -> str:
        """A second gateway process on the same NATS; its base URL."""
        port = free_port()
        environ = _environ(
            LIVECHAT_HTTP_PORT=str(port),
            LIVECHAT_DATA_DIR=str(self.root / "gateway2"),
            LIVECHAT_NATS_URL=self.nats.url,
            **self.env,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], env=environ, stdin=subprocess.DEVNULL
        )
        self.extra.append(process)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        for process in self.extra:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
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


async def _ready(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as client:
        for _ in range(600):
            try:
                if (await client.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{base_url} never became ready")


async def _history(base_url: str, conversation: str, count: int) -> list[dict[str, Any]]:
    for _ in range(400):
        response = await get_conversation(base_url, conversation)
        if response.status_code == 200:
            messages: list[dict[str, Any]] = response.json()["messages"]
            if len(messages) >= count and all(m["status"] != "streaming" for m in messages):
                return messages
        await asyncio.sleep(0.05)
    raise AssertionError(f"{conversation} never held {count} final messages")


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
    with pytest.raises(httpx.TransportError):  # the gateway dies under the stream
        async with (
            httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client,
            aconnect_sse(
                client,
                "POST",
                f"/v1/conversations/{conversation}/messages",
                json={"content": "a long story about lighthouses"},
            ) as source,
        ):
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                seen.append(json.loads(sse.data))
                if [e["type"] for e in seen].count("token") == 5:
                    stack.kill("gateway")
    assert seen[-1]["type"] == "token"
    reply = seen[0]["message_id"]
    last_id = seen[-1]["event_id"]

    # Another gateway instance, then the crashed one restarted: both resume exactly.
    other = system.another_gateway()
    await _ready(other)
    from_other = await _resume(other, conversation, last_id)
    stack.restart("gateway")
    await _ready(stack.gateway_url)
    from_restarted = await _resume(stack.gateway_url, conversation, last_id)

    assert from_other == from_restarted
    assert from_other[-1]["type"] == "done"
    everything = seen + from_other
    event_ids = [e["event_id"] for e in everything]
    assert event_ids == sorted(set(event_ids)), "no duplicate, in order"
    messages = await _history(stack.gateway_url, conversation, 2)
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
            await _history(stack.gateway_url, conversation, 2)
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
        messages = await _history(stack.gateway_url, conversation, 2)
        assert len(messages) == 2
    finally:
        system.stop()
