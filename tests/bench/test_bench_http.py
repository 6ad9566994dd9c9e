"""The bench's lean HTTP client: streamed bodies, kept-alive connections, a server's close."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from bench.http import HttpError, LeanClient


class _Server:
    """Answers each POST with its JSON body echoed in three chunks (a 404 with a body
    for /missing, bytes that are no HTTP for /garbled); `close_after` closes each
    connection after its response."""

    def __init__(self, *, close_after: bool = False) -> None:
        self.close_after = close_after
        self.connections = 0
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while line := await reader.readline():
                path = line.split()[1]
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests += 1
                if path == b"/garbled":
                    writer.write(b"nonsense\r\n\r\n")
                elif path == b"/missing":
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 7\r\n\r\nmissing")
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for part in filter(None, (body[:3], body[3:], b"!")):
                        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                        await writer.drain()
                    writer.write(b"0\r\n\r\n")
                await writer.drain()
                if self.close_after:
                    break
        finally:
            writer.close()


@asynccontextmanager
async def _serving(server: _Server) -> AsyncIterator[str]:
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    async with listening:
        yield f"http://127.0.0.1:{port}"


async def _post(client: LeanClient, value: object, path: str = "/echo") -> tuple[int, bytes]:
    async with client.stream("POST", path, json=value) as response:
        return response.status_code, await response.aread()


async def test_bodies_stream_whole_on_one_kept_alive_connection() -> None:
    server = _Server()
    async with _serving(server) as url, LeanClient(url, max_connections=1) as client:
        answers = [await _post(client, {"n": n}) for n in range(3)]
    assert answers == [
        (200, json.dumps({"n": n}, separators=(",", ":")).encode() + b"!") for n in range(3)
    ]
    assert server.connections == 1


async def test_a_connection_the_server_closed_is_replaced_and_no_request_fails() -> None:
    server = _Server(close_after=True)
    async with _serving(server) as url, LeanClient(url, max_connections=1) as client:
        answers = []
        for n in range(3):
            answers.append(await _post(client, n))
            await asyncio.sleep(0.05)  # the server's close arrives while it is idle
        answers.append(await _post(client, 3))  # and at once, before it could be seen
    assert answers == [(200, b"%d!" % n) for n in range(4)]
    assert server.connections == 4


async def test_a_response_left_part_read_is_finished_and_its_connection_used_again() -> None:
    server = _Server()
    async with _serving(server) as url, LeanClient(url, max_connections=1) as client:
        async with client.stream("POST", "/echo", json="abcdef") as response:
            first = await anext(aiter(response.aiter_raw()))
        assert first == b'"ab'
        assert await _post(client, "x") == (200, b'"x"!')
    assert server.connections == 1


async def test_an_error_status_comes_with_its_body() -> None:
    async with _serving(_Server()) as url, LeanClient(url, max_connections=1) as client:
        assert await _post(client, {}, "/missing") == (404, b"missing")


async def test_a_server_that_is_not_there_is_an_http_error() -> None:
    listening = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    listening.close()
    await listening.wait_closed()
    async with LeanClient(f"http://127.0.0.1:{port}", max_connections=1) as client:
        with pytest.raises(HttpError):
            await _post(client, {})


async def test_a_stream_left_by_an_error_does_not_give_its_connection_to_the_next() -> None:
    server = _Server()
    async with _serving(server) as url, LeanClient(url, max_connections=1) as client:
        with pytest.raises(RuntimeError):
            async with client.stream("POST", "/echo", json="abcdef"):
                raise RuntimeError("the caller failed mid-response")
        assert await _post(client, "x") == (200, b'"x"!')
    assert server.connections == 2


async def test_a_garbled_response_is_an_error_and_the_request_is_not_sent_again() -> None:
    server = _Server()
    async with _serving(server) as url, LeanClient(url, max_connections=1) as client:
        assert await _post(client, 1) == (200, b"1!")
        with pytest.raises(HttpError):
            await _post(client, 2, "/garbled")  # on the kept-alive connection
    assert server.requests == 2
