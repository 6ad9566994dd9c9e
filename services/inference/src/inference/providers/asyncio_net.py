"""The SDKs' HTTP connections on asyncio's own transports instead of anyio.

httpcore (under httpx, under the SDKs; httpcore2 and httpx2 for `openai`) reads and
writes a connection through anyio by default: per read a cancel scope with its
deadline, an event and several look-ups of the current task (each a `getpid` system
call on Python 3.11). A provider streams every token as its own HTTP chunk, so that is
one read per token. Here a connection is an asyncio protocol that buffers what
arrives, and a read takes it (one future, and one timer for its timeout, when it has to
wait). The pool, HTTP/1.1, TLS and redirects stay httpcore's and httpx's; the failures
are theirs too (`ConnectError`, `ReadError`, `ReadTimeout`, ...), so the SDKs map them
to the same `APIConnectionError` and `APITimeoutError` as before.

This uses httpcore's documented extension point, a network backend
(`AsyncConnectionPool(network_backend=...)`), and httpx's, a transport. Both library
pairs have the same interfaces; the classes here take the pair's exceptions.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from ssl import SSLContext
from types import ModuleType
from typing import Any, NamedTuple, cast

import httpcore
import httpcore2
import httpx
import httpx2

__all__ = [
    "AsyncioBackend",
    "AsyncioTransport",
    "LegacyAsyncioTransport",
    "asyncio_http_client",
    "legacy_asyncio_http_client",
]

# Past this many bytes read and not yet taken, the socket is not read further until
# they are (a provider's chunks are taken as they come: it never fills in practice).
_HIGH_WATER = 1 << 20

# The SDKs' own defaults for their HTTP clients (`DEFAULT_CONNECTION_LIMITS`).
OPENAI_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
GROQ_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


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


class _Errors(NamedTuple):
    """The failures a connection raises, httpcore's or httpcore2's."""

    connect_timeout: type[Exception]
    connect: type[Exception]
    read_timeout: type[Exception]
    read: type[Exception]
    write_timeout: type[Exception]
    write: type[Exception]

    @classmethod
    def of(cls, core: ModuleType) -> _Errors:
        return cls(
            core.ConnectTimeout,
            core.ConnectError,
            core.ReadTimeout,
            core.ReadError,
            core.WriteTimeout,
            core.WriteError,
        )


class _Stream:
    """An httpcore network stream (duck-typed: the pool only calls its methods)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        connection: _Connection,
        loop: asyncio.AbstractEventLoop,
        errors: _Errors,
    ) -> None:
        self._transport = transport
        self._connection = connection
        self._loop = loop
        self._errors = errors
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
                    await self._wait(connection.reader, timeout, self._errors.read_timeout)
                finally:
                    connection.reader = None
            if not connection.buffer:
                if connection.error is not None:
                    raise self._errors.read(str(connection.error)) from connection.error
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
            raise self._errors.write(str(connection.error or "connection closed"))
        self._transport.write(buffer)
        while connection.writing_paused and not connection.closed:
            connection.writer = self._loop.create_future()
            try:
                await self._wait(connection.writer, timeout, self._errors.write_timeout)
            finally:
                connection.writer = None
        if connection.error is not None:
            raise self._errors.write(str(connection.error)) from connection.error

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self,
        ssl_context: SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> _Stream:
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
            raise self._errors.connect_timeout(str(exc)) from exc
        except OSError as exc:  # ssl.SSLError among them
            self._transport.abort()
            raise self._errors.connect(str(exc)) from exc
        if transport is None:  # the connection was lost during the handshake
            raise self._errors.connect("connection lost during the TLS handshake")
        return _Stream(transport, self._connection, self._loop, self._errors)

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


class AsyncioBackend:
    """An httpcore (or httpcore2) network backend on asyncio transports; `core` is the
    library whose errors it raises."""

    def __init__(self, core: ModuleType = httpcore2) -> None:
        self._errors = _Errors.of(core)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _Stream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    _Connection, host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise self._errors.connect_timeout(str(exc)) from exc
        except OSError as exc:
            raise self._errors.connect(str(exc)) from exc
        # asyncio sets TCP_NODELAY on TCP sockets, as anyio does.
        return self._stream(transport, connection, loop, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _Stream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_unix_connection(_Connection, path)
        except TimeoutError as exc:
            raise self._errors.connect_timeout(str(exc)) from exc
        except OSError as exc:
            raise self._errors.connect(str(exc)) from exc
        return self._stream(transport, connection, loop, socket_options)

    def _stream(
        self,
        transport: asyncio.BaseTransport,
        connection: _Connection,
        loop: asyncio.AbstractEventLoop,
        socket_options: Iterable[Any] | None,
    ) -> _Stream:
        sock = transport.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        return _Stream(cast(asyncio.Transport, transport), connection, loop, self._errors)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# The connection pool's failures as the client library's (as httpx's own transport
# maps them), most specific first.
_ERROR_NAMES = (
    "ConnectTimeout",
    "ReadTimeout",
    "WriteTimeout",
    "PoolTimeout",
    "TimeoutException",
    "ConnectError",
    "ReadError",
    "WriteError",
    "NetworkError",
    "ProxyError",
    "UnsupportedProtocol",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ProtocolError",
)


class _Library(NamedTuple):
    core: ModuleType  # httpcore or httpcore2
    http: ModuleType  # httpx or httpx2
    errors: tuple[tuple[type[Exception], type[Exception]], ...]

    @classmethod
    def of(cls, core: ModuleType, http: ModuleType) -> _Library:
        errors = tuple((getattr(core, name), getattr(http, name)) for name in _ERROR_NAMES)
        return cls(core, http, errors)

    def mapped(self, exc: Exception) -> Exception:
        for source, target in self.errors:
            if isinstance(exc, source):
                return target(str(exc))
        return exc


_HTTPX2 = _Library.of(httpcore2, httpx2)
_HTTPX = _Library.of(httpcore, httpx)


class _Body:
    """A response's body: the pool's stream, its failures mapped."""

    _library: _Library

    def __init__(self, stream: AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = self._library.mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception as exc:
                mapped = self._library.mapped(exc)
                if mapped is exc:
                    raise
                raise mapped from exc


class _Body2(_Body, httpx2.AsyncByteStream):
    _library = _HTTPX2


class _Body1(_Body, httpx.AsyncByteStream):
    _library = _HTTPX


class _Transport:
    """httpx's default transport (one connection pool, HTTP/1.1), its connections on
    `AsyncioBackend`."""

    _library: _Library
    _body: type[_Body]
    _limits: Any  # the SDK's own defaults, in its library's `Limits`

    def __init__(
        self,
        *,
        limits: Any = None,
        verify: SSLContext | str | bool = True,
        trust_env: bool = True,
    ) -> None:
        limits = limits or self._limits
        core, http = self._library.core, self._library.http
        self._pool = core.AsyncConnectionPool(
            ssl_context=http.create_ssl_context(verify=verify, trust_env=trust_env),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(core),
        )

    async def handle_async_request(self, request: Any) -> Any:
        core, http = self._library.core, self._library.http
        core_request = core.Request(
            method=request.method,
            url=core.URL(
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
            mapped = self._library.mapped(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return http.Response(
            status_code=response.status,
            headers=response.headers,
            stream=self._body(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


class AsyncioTransport(_Transport, httpx2.AsyncBaseTransport):
    """For httpx2 (the `openai` SDK)."""

    _library = _HTTPX2
    _body = _Body2
    _limits = OPENAI_LIMITS


class LegacyAsyncioTransport(_Transport, httpx.AsyncBaseTransport):
    """For httpx (the `groq` SDK)."""

    _library = _HTTPX
    _body = _Body1
    _limits = GROQ_LIMITS


def _proxied() -> bool:
    """Whether the environment names a proxy: httpx ignores the environment's proxies in
    a client given its own transport, so the SDK's own client is kept then."""
    proxies = urllib.request.getproxies()
    return any(proxies.get(scheme) for scheme in ("http", "https", "all"))


def asyncio_http_client(timeout: httpx2.Timeout) -> httpx2.AsyncClient | None:
    """An HTTP client for the `openai` SDK as its default one (its connection limits,
    redirects followed, certificates from the environment) on `AsyncioTransport`;
    None (the SDK's own) when the environment names a proxy."""
    if _proxied():
        return None
    return httpx2.AsyncClient(transport=AsyncioTransport(), timeout=timeout, follow_redirects=True)


def legacy_asyncio_http_client(timeout: httpx.Timeout) -> httpx.AsyncClient | None:
    """The same for the `groq` SDK (httpx, its limits) on `LegacyAsyncioTransport`."""
    if _proxied():
        return None
    transport = LegacyAsyncioTransport()
    return httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=True)
