"""The `openai` SDK's HTTP connections on asyncio's own transports instead of anyio.

httpcore2 (under httpx2, under the SDK) reads and writes a connection through anyio by
default: per read a cancel scope with its deadline, an event and several look-ups of
the current task (each a `getpid` system call on Python 3.11). A provider streams every
token as its own HTTP chunk, so that is one read per token: about a tenth of the
worker's CPU under load. Here a connection is an asyncio protocol that buffers what
arrives, and a read takes it (one future, and one timer for its timeout, when it has to
wait). The pool, HTTP/1.1, TLS and proxies stay httpcore2's and httpx2's; the failures
are theirs too (`ConnectError`, `ReadError`, `ReadTimeout`, ...), so the SDK maps them
to the same `APIConnectionError` and `APITimeoutError` as before.

This uses httpcore2's documented extension point, a network backend
(`AsyncConnectionPool(network_backend=...)`), and httpx2's, a transport.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from ssl import SSLContext
from typing import Any, cast

import httpcore2
import httpx2

__all__ = ["AsyncioBackend", "AsyncioTransport", "asyncio_http_client"]

# Past this many bytes read and not yet taken, the socket is not read further until
# they are (a provider's chunks are taken as they come: it never fills in practice).
_HIGH_WATER = 1 << 20

# The `openai` SDK's own defaults for its HTTP client (`DEFAULT_CONNECTION_LIMITS`).
DEFAULT_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)


class _Connection(asyncio.Protocol):
    """What the socket delivers, kept until `_Stream.read` takes it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.closed = False  # end of stream, or connection lost
        self.error: BaseException | None = None  # why it was lost, when not cleanly
        self.reading_paused = False
        self.writing_paused = False
        self.reader: asyncio.Future[None] | None = None  # a read waiting for data
        self.writer: asyncio.Future[None] | None = None  # a write waiting for room

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` instances, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buffer = self.buffer + data if self.buffer else data
        if len(self.buffer) > _HIGH_WATER and not self.reading_paused:
            self.reading_paused = True
            assert self.transport is not None
            self.transport.pause_reading()
        _wake(self.reader)

    def eof_received(self) -> bool | None:
        self.closed = True
        _wake(self.reader)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = exc
        _wake(self.reader)
        _wake(self.writer)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self.writer)


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out"))


class _Stream(httpcore2.AsyncNetworkStream):
    def __init__(
        self,
        transport: asyncio.Transport,
        connection: _Connection,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._loop = loop
        connection.transport = transport

    async def _wait(
        self, waiter: asyncio.Future[None], timeout: float | None, error: type[Exception]
    ) -> None:
        timer = None if timeout is None else self._loop.call_later(timeout, _expire, waiter, error)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        if not connection.buffer:
            if not connection.closed:
                connection.reader = self._loop.create_future()
                try:
                    await self._wait(connection.reader, timeout, httpcore2.ReadTimeout)
                finally:
                    connection.reader = None
            if not connection.buffer:
                if connection.error is not None:
                    raise httpcore2.ReadError(str(connection.error)) from connection.error
                return b""  # the end of the stream
        data = connection.buffer
        if len(data) > max_bytes:
            data, connection.buffer = data[:max_bytes], data[max_bytes:]
        else:
            connection.buffer = b""
        if connection.reading_paused and len(connection.buffer) <= _HIGH_WATER:
            connection.reading_paused = False
            self._transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        connection = self._connection
        if connection.closed or self._transport.is_closing():
            raise httpcore2.WriteError(str(connection.error or "connection closed"))
        self._transport.write(buffer)
        while connection.writing_paused and not connection.closed:
            connection.writer = self._loop.create_future()
            try:
                await self._wait(connection.writer, timeout, httpcore2.WriteTimeout)
            finally:
                connection.writer = None
        if connection.error is not None:
            raise httpcore2.WriteError(str(connection.error)) from connection.error

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                transport = await self._loop.start_tls(
                    self._transport,
                    self._connection,
                    ssl_context,
                    server_hostname=server_hostname,
                )
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except OSError as exc:  # ssl.SSLError among them
            self._transport.abort()
            raise httpcore2.ConnectError(str(exc)) from exc
        if transport is None:  # the connection was lost during the handshake
            raise httpcore2.ConnectError("connection lost during the TLS handshake")
        return _Stream(transport, self._connection, self._loop)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._transport.get_extra_info("sockname")
        if info == "server_addr":
            return self._transport.get_extra_info("peername")
        if info == "socket":
            return self._transport.get_extra_info("socket")
        if info == "is_readable":
            # An idle connection with something to read (or its end) is not reused.
            connection = self._connection
            return connection.closed or bool(connection.buffer)
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """httpcore2's network backend on asyncio transports (see the module's docstring)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    _Connection, host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        # asyncio sets TCP_NODELAY on TCP sockets, as anyio does.
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(transport, connection, loop)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_unix_connection(_Connection, path)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(transport, connection, loop)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# httpcore2's failures as httpx2's (as httpx2's own transport maps them), most specific
# first.
_ERRORS: tuple[tuple[type[Exception], type[httpx2.TransportError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.ProxyError, httpx2.ProxyError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


def _mapped(exc: Exception) -> Exception:
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc))
    return exc


class _Body(httpx2.AsyncByteStream):
    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as exc:
                mapped = _mapped(exc)
                if mapped is exc:
                    raise
                raise mapped from exc


class AsyncioTransport(httpx2.AsyncBaseTransport):
    """httpx2's default transport (one httpcore2 connection pool, HTTP/1.1), its
    connections on `AsyncioBackend`."""

    def __init__(
        self,
        *,
        limits: httpx2.Limits = DEFAULT_LIMITS,
        verify: SSLContext | str | bool = True,
        trust_env: bool = True,
    ) -> None:
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify, trust_env=trust_env),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        assert isinstance(request.stream, httpx2.AsyncByteStream)
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool.handle_async_request(core_request)
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        assert isinstance(response.stream, AsyncIterable)
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def asyncio_http_client(timeout: httpx2.Timeout) -> httpx2.AsyncClient | None:
    """An HTTP client for the `openai` SDK as its default one (its connection limits,
    redirects followed, certificates from the environment) on `AsyncioTransport`.

    None (the SDK's own client) when the environment names a proxy: httpx2 ignores the
    environment's proxies in a client given its own transport.
    """
    proxies = urllib.request.getproxies()
    if any(proxies.get(scheme) for scheme in ("http", "https", "all")):
        return None
    return httpx2.AsyncClient(transport=AsyncioTransport(), timeout=timeout, follow_redirects=True)
