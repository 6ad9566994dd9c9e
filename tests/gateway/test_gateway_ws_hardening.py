"""GET /v1/ws under abuse: floods, silent peers and clients that stop reading."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import uvicorn
import websockets
from nats.aio.client import Client
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from contracts import subjects
from contracts.events import DoneEvent, TokenEvent, Usage
from devstack.ports import free_port
from gateway import GatewaySettings
from gateway.server import uvicorn_config

Serve = Callable[..., AbstractAsyncContextManager[str]]


def ws_url(gateway_url: str) -> str:
    return gateway_url.replace("http://", "ws://") + "/v1/ws"


async def recv(ws: Any, timeout: float = 20) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return frame


@pytest.fixture
def serve(settings: GatewaySettings, nc: Client) -> Serve:
    """Run a gateway with some settings changed: `async with serve(x=1) as url:`."""

    @asynccontextmanager
    async def run(**changes: Any) -> AsyncIterator[str]:
        config = settings.model_copy(update={"http_port": free_port(), **changes})
        server = uvicorn.Server(uvicorn_config(config))
        server.config.log_level = "warning"
        task = asyncio.create_task(server.serve())
        for _ in range(400):
            if server.started or task.done():
                break
            await asyncio.sleep(0.025)
        assert server.started, "the gateway did not start"
        try:
            yield f"http://{config.http_host}:{config.http_port}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 15)

    return run


async def open_ws_count(gateway_url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{gateway_url}/metrics")).text
    for line in text.splitlines():
        if line.startswith('livechat_gateway_active_streams{transport="ws"}'):
            return float(line.split()[-1])
    raise AssertionError("no ws gauge in /metrics")


async def until_open_ws(gateway_url: str, expected: float, within: float = 30) -> None:
    for _ in range(int(within * 10)):
        if await open_ws_count(gateway_url) == expected:
            return
        await asyncio.sleep(0.1)
    assert await open_ws_count(gateway_url) == expected


class RawClient:
    """A WebSocket client on a bare socket: it reads only when asked and never answers pings."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.loop = asyncio.get_running_loop()
        self.frames: list[Frame] = []
        self.eof = False

    @classmethod
    async def connect(cls, url: str, *, receive_buffer: int | None = None) -> RawClient:
        parts = urlsplit(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connect, so the window the gateway sees stays this small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (parts.hostname, parts.port))
        protocol = ClientProtocol(parse_uri(url), max_size=None)
        protocol.send_request(protocol.connect())
        client = cls(sock, protocol)
        await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
        while True:
            events = await client._receive()
            response = [e for e in events if isinstance(e, Response)]
            if response:
                assert response[0].status_code == 101
                client.frames.extend(e for e in events if isinstance(e, Frame))
                return client

    async def _receive(self) -> list[object]:
        data = await asyncio.wait_for(self.loop.sock_recv(self.sock, 65536), 30)
        if data:
            self.protocol.receive_data(data)
        else:
            self.eof = True
            self.protocol.receive_eof()
        return list(self.protocol.events_received())

    async def send(self, **frame: Any) -> None:
        # Serialized by hand: the protocol's own output would carry its queued pongs.
        wire = Frame(Opcode.TEXT, json.dumps(frame).encode()).serialize(mask=True)
        await self.loop.sock_sendall(self.sock, wire)

    async def next_frame(self) -> Frame | None:
        """The next frame; None at the end of the connection."""
        while not self.frames:
            if self.eof:
                return None
            self.frames.extend(e for e in await self._receive() if isinstance(e, Frame))
        return self.frames.pop(0)

    async def next_json(self) -> dict[str, Any]:
        while True:
            frame = await self.next_frame()
            assert frame is not None, "the connection ended"
            if frame.opcode is Opcode.TEXT:
                data: dict[str, Any] = json.loads(frame.data)
                return data

    def close(self) -> None:
        self.sock.close()


async def test_frames_over_the_rate_get_errors_and_the_socket_stays_open(serve):
    async with serve(ws_max_frames_per_second=5) as url, websockets.connect(ws_url(url)) as ws:
        # A burst of twice the rate (10) passes; the frames beyond it are refused, not
        # handled. 20 at once: refused as long as the server takes them within 1.8 s
        # (5 a second refill), and never closed (10 refusals is what patience allows).
        for _ in range(20):
            await ws.send(json.dumps({"type": "ping"}))
        answers = [await recv(ws) for _ in range(20)]
        assert answers[0] == {"type": "pong"}
        refused = [a for a in answers if a["type"] == "error"]
        assert refused, answers
        assert all(a["code"] == "rate_limited" and a["retryable"] is True for a in refused)
        assert all(a in ({"type": "pong"}, refused[0]) for a in answers)
        await asyncio.sleep(1.5)
        await ws.send(json.dumps({"type": "ping"}))
        assert await recv(ws) == {"type": "pong"}


async def test_a_sustained_flood_is_closed_with_1008_and_others_are_unaffected(serve):
    async with (
        serve(ws_max_frames_per_second=5) as url,
        websockets.connect(ws_url(url)) as calm,
        websockets.connect(ws_url(url)) as flood,
    ):
        with contextlib.suppress(ConnectionClosed):
            for _ in range(300):
                await flood.send(json.dumps({"type": "ping"}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv(flood)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008
        await calm.send(json.dumps({"type": "ping"}))
        assert await recv(calm) == {"type": "pong"}


async def test_a_silent_peer_is_pinged_then_closed(serve):
    async with (
        serve(ws_idle_timeout_seconds=1.0) as url,
        websockets.connect(ws_url(url)) as answering,
    ):
        raw = await RawClient.connect(ws_url(url))
        try:
            pinged = closed = False
            while (frame := await raw.next_frame()) is not None:
                if frame.opcode is Opcode.PING:
                    pinged = True
                elif frame.opcode is Opcode.CLOSE:
                    closed = True
                    assert Close.parse(frame.data).code == 1011
            assert pinged and closed
        finally:
            raw.close()
        # The gateway ended that session; the client that answers pings (as every
        # browser does, unseen) is still served well past the idle timeout.
        await until_open_ws(url, 1)
        await asyncio.sleep(2.5)
        await answering.send(json.dumps({"type": "ping"}))
        assert await recv(answering) == {"type": "pong"}


async def test_a_client_that_stops_reading_is_dropped_while_others_get_every_token(serve, nc):
    conv, reply, count = "slow1", "r1", 4000
    content = "x" * 2000  # 8 MB in all: more than the socket buffers of a stalled reader hold
    async with (
        serve(
            ws_send_timeout_seconds=1.0,
            ws_send_queue_size=16,
            listener_queue_size=64,
            ws_idle_timeout_seconds=600.0,
        ) as url,
        websockets.connect(ws_url(url), max_size=None) as fast,
    ):
        stalled = await RawClient.connect(ws_url(url), receive_buffer=4096)
        try:
            await stalled.send(type="subscribe", conversation_id=conv)
            await stalled.send(type="ping")
            assert await stalled.next_json() == {"type": "pong"}
            await fast.send(json.dumps({"type": "subscribe", "conversation_id": conv}))
            await fast.send(json.dumps({"type": "ping"}))
            while (answer := await recv(fast))["type"] == "presence":
                assert answer["state"] == "present"  # the stalled client is there
            assert answer == {"type": "pong"}
            # From here on the stalled client reads nothing.
            subject = subjects.events(conv)
            for _ in range(count):
                token = TokenEvent(message_id=reply, content=content)
                await nc.publish(subject, token.model_dump_json().encode())
            done = DoneEvent(
                message_id=reply,
                finish_reason="stop",
                usage=Usage.of(1, count),
                model="demo",
                provider="fake",
            )
            await nc.publish(subject, done.model_dump_json().encode())
            await nc.flush()

            tokens = 0
            while (frame := await recv(fast, 60))["type"] != "done":
                # Besides tokens only the stalled client's presence (there, then left).
                assert frame["type"] in ("token", "presence")
                tokens += frame["type"] == "token"
            assert tokens == count

            await until_open_ws(url, 1)  # the stalled one is gone, the fast one stays
            await fast.send(json.dumps({"type": "ping"}))
            # (The stalled client's presence may come first; a busy queue may skip it.)
            while (answer := await recv(fast))["type"] == "presence":
                assert answer["state"] in ("present", "left")
            assert answer == {"type": "pong"}

            # Reading again, the stalled client gets what was already on its way,
            # then the end of the connection: never the rest of the stream.
            seen: list[str] = []
            while (last := await stalled.next_frame()) is not None:
                if last.opcode is Opcode.TEXT:
                    seen.append(json.loads(last.data)["type"])
            assert "done" not in seen
            assert len(seen) < count
        finally:
            stalled.close()
