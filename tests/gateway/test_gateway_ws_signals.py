"""Typing, presence and read receipts between WebSocket clients, across two gateways."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from nats.aio.client import Client

from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.server import uvicorn_config


def ws_url(gateway_url: str) -> str:
    return gateway_url.replace("http://", "ws://") + "/v1/ws"


async def recv(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
    return frame


async def send(ws: Any, **frame: Any) -> None:
    await ws.send(json.dumps(frame))


async def recv_type(ws: Any, *types: str) -> dict[str, Any]:
    """The next frame of one of `types`, skipping the others (e.g. presence of late joiners)."""
    while True:
        frame = await recv(ws)
        if frame["type"] in types:
            return frame


async def subscribe(ws: Any, conv: str) -> None:
    # The pong proves the reader handled the subscribe (and joined) before it.
    await send(ws, type="subscribe", conversation_id=conv)
    await send(ws, type="ping")
    assert await recv_type(ws, "pong") == {"type": "pong"}


@pytest.fixture
async def other_gateway_url(settings: GatewaySettings, nc: Client) -> AsyncIterator[str]:
    """A second gateway on the same NATS: its clients reach the first one's only via NATS."""
    other = settings.model_copy(update={"http_port": free_port()})
    server = uvicorn.Server(uvicorn_config(other))
    server.config.log_level = "warning"
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.025)
    assert server.started, "the second gateway did not start"
    try:
        yield f"http://{other.http_host}:{other.http_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def test_typing_presence_and_read_reach_the_other_gateways_clients(
    gateway_url, other_gateway_url
):
    async with (
        websockets.connect(ws_url(gateway_url)) as alice,
        websockets.connect(ws_url(other_gateway_url)) as bob,
    ):
        await subscribe(alice, "sig1")
        await send(bob, type="subscribe", conversation_id="sig1")
        # Bob, the newcomer, is told who is already there.
        present = await recv(bob)
        assert present == {
            "type": "presence",
            "conversation_id": "sig1",
            "user_id": "local",
            "client_id": present["client_id"],
            "state": "present",
        }
        alice_id = present["client_id"]
        joined = await recv_type(alice, "presence")
        assert joined["conversation_id"] == "sig1"
        assert joined["state"] == "joined"
        assert joined["user_id"] == "local"
        bob_id = joined["client_id"]

        await send(bob, type="typing", conversation_id="sig1", is_typing=True)
        typing = await recv_type(alice, "typing")
        assert typing == {
            "type": "typing",
            "conversation_id": "sig1",
            "user_id": "local",
            "client_id": bob_id,
            "is_typing": True,
        }

        assert alice_id != bob_id

        await send(alice, type="read", conversation_id="sig1", event_id=42)
        # Bob's own typing went out before Alice's read: echoed, it would come first.
        read = await recv(bob)
        assert read["type"] == "read"
        assert read["event_id"] == 42
        assert read["conversation_id"] == "sig1"
        assert read["client_id"] == alice_id

        await send(bob, type="typing", conversation_id="sig1", is_typing=False)
        stopped = await recv_type(alice, "typing")
        assert stopped["is_typing"] is False


async def test_a_closing_client_is_announced_as_left(gateway_url, other_gateway_url):
    async with websockets.connect(ws_url(gateway_url)) as alice:
        await subscribe(alice, "sig2")
        async with websockets.connect(ws_url(other_gateway_url)) as bob:
            await subscribe(bob, "sig2")
            joined = await recv_type(alice, "presence")
            assert joined["state"] == "joined"
        left = await recv_type(alice, "presence")
        assert left["state"] == "left"
        assert left["client_id"] == joined["client_id"]
        assert left["conversation_id"] == "sig2"


async def test_a_second_tab_of_the_same_user_gets_typing_but_the_typist_does_not(gateway_url):
    async with (
        websockets.connect(ws_url(gateway_url)) as tab1,
        websockets.connect(ws_url(gateway_url)) as tab2,
    ):
        await subscribe(tab1, "sig3")
        await send(tab2, type="subscribe", conversation_id="sig3")
        assert (await recv(tab2))["state"] == "present"  # tab1 is there
        tab2_id = (await recv_type(tab1, "presence"))["client_id"]
        await send(tab2, type="typing", conversation_id="sig3", is_typing=True)
        typing = await recv_type(tab1, "typing")
        assert typing["client_id"] == tab2_id
        # tab2's next frame is its pong, not its own typing.
        await send(tab2, type="ping")
        assert await recv(tab2) == {"type": "pong"}


async def test_sending_a_message_joins_the_conversation(gateway_url, worker):
    async with (
        websockets.connect(ws_url(gateway_url)) as watcher,
        websockets.connect(ws_url(gateway_url)) as sender,
    ):
        await subscribe(watcher, "sig4")
        await send(sender, type="message", conversation_id="sig4", content="hello")
        joined = await recv_type(watcher, "presence")
        assert joined["state"] == "joined"
        await send(sender, type="typing", conversation_id="sig4", is_typing=True)
        typing = await recv_type(watcher, "typing")
        assert typing["client_id"] == joined["client_id"]
        await recv_type(sender, "done")  # the reply streams to the sender as usual


async def test_signals_stay_within_their_conversation(gateway_url):
    async with (
        websockets.connect(ws_url(gateway_url)) as here,
        websockets.connect(ws_url(gateway_url)) as elsewhere,
    ):
        await subscribe(here, "sig5")
        await subscribe(elsewhere, "sig6")
        await send(elsewhere, type="typing", conversation_id="sig6", is_typing=True)
        await send(elsewhere, type="subscribe", conversation_id="sig5")
        # The join of sig5 is the first signal `here` sees: sig6's typing never came.
        first = await recv(here)
        assert first["type"] == "presence"
        assert first["conversation_id"] == "sig5"


async def test_typing_on_a_conversation_not_followed_is_an_error_and_the_socket_stays(
    gateway_url,
):
    async with (
        websockets.connect(ws_url(gateway_url)) as member,
        websockets.connect(ws_url(gateway_url)) as outsider,
    ):
        await subscribe(member, "sig7")
        await send(outsider, type="typing", conversation_id="sig7", is_typing=True)
        error = await recv(outsider)
        assert error["type"] == "error"
        assert error["code"] == "not_subscribed"
        await send(outsider, type="read", conversation_id="sig7", event_id=1)
        assert (await recv(outsider))["code"] == "not_subscribed"
        await send(outsider, type="ping")
        assert await recv(outsider) == {"type": "pong"}
        # The member heard nothing from the outsider.
        await send(member, type="ping")
        assert await recv(member) == {"type": "pong"}
