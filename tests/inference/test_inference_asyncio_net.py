"""The SDKs' connections on asyncio's transports (`AsyncioTransport` for httpx2 under
`openai`, `LegacyAsyncioTransport` for httpx under `groq`): plain and TLS, on asyncio's
loop and on uvloop (the services' loop), and the libraries' errors as before: refused,
timed out, cut mid-body."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from inference.providers.asyncio_net import AsyncioTransport, LegacyAsyncioTransport

Run = Callable[[Coroutine[Any, Any, None]], None]
RUNNERS: dict[str, Run] = {"asyncio": asyncio.run, "uvloop": uvloop.run}
BIG = 3 * (1 << 20) + 17  # past the read buffer's high water mark


@pytest.fixture(params=sorted(RUNNERS))
def run(request: pytest.FixtureRequest) -> Run:
    return RUNNERS[request.param]


class Library:
    """httpx2 or httpx: its client, its errors, and the transport made for it."""

    def __init__(self, http: Any, transport: Any) -> None:
        self.http = http
        self._transport = transport

    def client(self, verify: ssl.SSLContext | bool = True, timeout: float = 5.0) -> Any:
        return self.http.AsyncClient(
            transport=self._transport(verify=verify), timeout=self.http.Timeout(timeout)
        )


LIBRARIES = {
    "httpx2": Library(httpx2, AsyncioTransport),
    "httpx": Library(httpx, LegacyAsyncioTransport),
}


@pytest.fixture(params=sorted(LIBRARIES))
def lib(request: pytest.FixtureRequest) -> Library:
    return LIBRARIES[request.param]


def _certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """One request's head (the tests send no body); False at the connection's end."""
    head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
    return bool(head)


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def sse_server(events: list[bytes], connections: list[int]) -> Handler:
    """Answers every request on a connection with `events`, each its own HTTP chunk."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while await _read_request(reader):
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                )
                for event in events:
                    writer.write(_chunk(event))
                    await writer.drain()
                    await asyncio.sleep(0.001)
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def _stream(client: Any, url: str) -> list[bytes]:
    async with client.stream("POST", url) as response:
        assert response.status_code == 200
        return [part async for part in response.aiter_raw()]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_streams_chunk_by_chunk_and_reuses_the_connection(
    run: Run, lib: Library, tls: bool, tmp_path: Path
) -> None:
    events = [b'data: {"n": %d}\n\n' % i for i in range(20)]
    connections: list[int] = []

    async def scenario() -> None:
        server_ssl = client_ssl = None
        if tls:
            cert, key = _certificate(tmp_path)
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ssl.load_cert_chain(cert, key)
            client_ssl = ssl.create_default_context(cafile=str(cert))
        server = await asyncio.start_server(
            sse_server(events, connections), "127.0.0.1", 0, ssl=server_ssl
        )
        port = server.sockets[0].getsockname()[1]
        scheme = "https" if tls else "http"
        verify = client_ssl if client_ssl is not None else True
        async with server, lib.client(verify) as client:
            for host in ("127.0.0.1", "localhost"):
                url = f"{scheme}://{host}:{port}/v1/chat/completions"
                assert b"".join(await _stream(client, url)) == b"".join(events)
                assert b"".join(await _stream(client, url)) == b"".join(events)

    run(scenario())
    assert len(connections) == 2  # one per host, each kept for its second request


def test_a_large_body_arrives_whole(run: Run, lib: Library) -> None:
    body = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, lib.client() as client:
            async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                received = b""
                async for part in response.aiter_raw():
                    received += part
                    await asyncio.sleep(0)  # the server writes faster than this reads
            assert received == body

    run(scenario())


def test_a_refused_connection_is_a_connect_error(run: Run, lib: Library) -> None:
    async def scenario() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        async with lib.client() as client:
            with pytest.raises(lib.http.ConnectError):
                await client.get(f"http://127.0.0.1:{port}/")

    run(scenario())


def test_silence_is_a_read_timeout_and_a_cut_body_a_transport_error(run: Run, lib: Library) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"a"))
        await writer.drain()
        await reader.read()  # until the client gives up
        writer.close()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"a"))
        await writer.drain()
        writer.transport.abort()

    async def scenario() -> None:
        errors = ((silent, lib.http.ReadTimeout), (cut, lib.http.TransportError))
        for handler, error in errors:
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            async with server, lib.client(timeout=0.3) as client:
                parts: list[bytes] = []
                with pytest.raises(error):
                    async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                        async for part in response.aiter_raw():
                            parts.append(part)
                assert parts == [b"a"]

    run(scenario())


def test_a_request_body_arrives_and_a_body_without_length_ends_with_the_connection(
    run: Run, lib: Library
) -> None:
    payload = b'{"messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}'

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        # No length, no chunks: the body is what comes until the server hangs up.
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for start in range(0, len(body), 20_000):
            writer.write(body[start : start + 20_000])
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, lib.client() as client:
            for _ in range(2):  # the closed connection is not reused
                response = await client.post(f"http://127.0.0.1:{port}/echo", content=payload)
                assert response.status_code == 200
                assert response.content == payload

    run(scenario())


def test_a_response_that_is_not_http_is_a_protocol_error(run: Run, lib: Library) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(garbage, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, lib.client(timeout=5.0) as client:
            with pytest.raises(lib.http.RemoteProtocolError):
                await client.get(f"http://127.0.0.1:{port}/")

    run(scenario())


def test_a_shorter_timeout_on_a_reused_connection_still_fires(run: Run, lib: Library) -> None:
    async def answer_then_fall_silent(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(_chunk(b"a") + b"0\r\n\r\n")
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunk(b"b"))
        await writer.drain()
        await reader.read()  # until the client gives up
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(answer_then_fall_silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        async with server, lib.client() as client:
            # A day's read timeout first: its timer must not hold back the next one's.
            async with client.stream("GET", url, timeout=86400) as response:
                assert [part async for part in response.aiter_raw()] == [b"a"]
            parts: list[bytes] = []
            with pytest.raises(lib.http.ReadTimeout):
                async with client.stream("GET", url, timeout=0.3) as response:
                    async for part in response.aiter_raw():
                        parts.append(part)
            assert parts == [b"b"]

    run(scenario())


def test_bytes_after_a_response_are_not_its_body_nor_the_next_ones(run: Run, lib: Library) -> None:
    # A server that answers with more than one response (in the same segment): the
    # response ends where its length says, and its connection is not reused.
    connections: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        number = len(connections)
        while await _read_request(reader):
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n%d-a" % number
                + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra"
            )
            await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, lib.client() as client:
            for number in (1, 2):
                response = await client.get(f"http://127.0.0.1:{port}/")
                assert response.content == b"%d-a" % number

    run(scenario())
    assert len(connections) == 2


def test_a_response_head_without_end_is_a_protocol_error(run: Run, lib: Library) -> None:
    # Headers past what any provider sends (httpcore's limit too, 100 KiB) fail the
    # connection instead of being held as they come.
    async def endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        try:
            writer.write(b"HTTP/1.1 200 OK\r\n")
            for number in range(50_000):  # 5 MB of headers, then an empty body
                writer.write(b"X-Padding-%d: %s\r\n" % (number, b"y" * 90))
                await writer.drain()
            writer.write(b"Content-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read()
        except ConnectionError:
            pass  # the client hung up first
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(endless_headers, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server, lib.client() as client:
            with pytest.raises(lib.http.RemoteProtocolError):
                await client.get(f"http://127.0.0.1:{port}/")

    run(scenario())


def test_a_body_left_unread_frees_its_slot_and_its_connection_is_not_reused(
    run: Run, lib: Library
) -> None:
    # A stream abandoned mid-way, and one whose reader is cancelled mid-read: the one
    # connection the pool may hold is freed each time, never reused with the rest of
    # the abandoned body still coming; the next request gets its own answer whole.
    events = [b"data: %d\n\n" % i for i in range(5)]
    connections: list[int] = []

    async def scenario() -> None:
        server = await asyncio.start_server(sse_server(events, connections), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/"
        limits = lib.http.Limits(max_connections=1, max_keepalive_connections=1)
        transport = lib._transport(limits=limits)
        timeout = lib.http.Timeout(5.0, pool=1.0)
        async with server, lib.http.AsyncClient(transport=transport, timeout=timeout) as client:
            async with client.stream("POST", url) as response:
                async for _ in response.aiter_raw():
                    break  # abandoned after its first event

            reading = asyncio.Event()

            async def read_slowly() -> None:
                async with client.stream("POST", url) as response:
                    async for _ in response.aiter_raw():
                        reading.set()
                        await asyncio.Event().wait()  # until cancelled

            reader = asyncio.create_task(read_slowly())
            await reading.wait()
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader

            assert b"".join(await _stream(client, url)) == b"".join(events)

    run(scenario())
    assert len(connections) == 3
