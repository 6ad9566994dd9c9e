"""The SDKs' HTTP/1.1 connections: asyncio protocols, responses parsed by httptools.

httpx's default transport (httpcore's pool and h11's parser, under the SDKs; httpcore2
and httpx2 for `openai`) runs per received chunk a stack of Python: h11's event
machine, httpcore's traces and locks, five generators deep. A provider streams every
token as its own HTTP chunk, so that was a fifth of a worker's CPU per answer, and as
much again to send each request through the pool. Here a connection is an asyncio
protocol whose bytes go straight into llhttp (httptools, C): the body's chunks arrive
decoded, and a read takes what is there (one future, and one timer for its timeout,
when it has to wait).

It is httpx's documented extension point, a transport (`AsyncBaseTransport`): the SDKs
build their requests, follow redirects and map failures as with the default one, and
get the same failures (`ConnectError`, `ReadError`, `ReadTimeout`,
`RemoteProtocolError`, `PoolTimeout`, ...), so they raise the same
`APIConnectionError` and `APITimeoutError` as before. One pool per client, HTTP/1.1
with keep-alive, TLS by the client's SSL context; the limits are the SDK's own
defaults (`max_connections` requests at once, `max_keepalive_connections` idle ones
kept for `keepalive_expiry` seconds). A client whose environment names a proxy keeps
the SDK's own transport (`_proxied`).
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator
from ssl import SSLContext
from types import ModuleType
from typing import Any, NamedTuple, cast

import httptools
import httpx
import httpx2

__all__ = [
    "AsyncioTransport",
    "LegacyAsyncioTransport",
    "asyncio_http_client",
    "legacy_asyncio_http_client",
]

# Past this many bytes read and not yet taken, the socket is not read further until
# they are (a provider's chunks are taken as they come: it never fills in practice).
_HIGH_WATER = 1 << 20
# Most bytes a response's status line and headers may take (httpcore's limit for h11):
# a server sending headers without end fails its connection instead of filling memory.
_MAX_HEAD = 100 * 1024

# The SDKs' own defaults for their HTTP clients (`DEFAULT_CONNECTION_LIMITS`).
OPENAI_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
GROQ_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_DEFAULT_PORTS = {b"http": 80, b"https": 443}
_PARSE_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)


class _Unsolicited(httptools.HttpParserError):
    """A response began after the one asked for had ended (in the same bytes)."""


class _HeadTooLarge(httptools.HttpParserError):
    """A response's head (status line and headers) past `_MAX_HEAD` bytes."""


class _Errors(NamedTuple):
    """The failures a connection raises: httpx's or httpx2's."""

    connect_timeout: type[Exception]
    connect: type[Exception]
    read_timeout: type[Exception]
    read: type[Exception]
    write_timeout: type[Exception]
    write: type[Exception]
    pool_timeout: type[Exception]
    protocol: type[Exception]  # the server broke HTTP (or hung up mid-response)
    unsupported: type[Exception]

    @classmethod
    def of(cls, http: ModuleType) -> _Errors:
        return cls(
            http.ConnectTimeout,
            http.ConnectError,
            http.ReadTimeout,
            http.ReadError,
            http.WriteTimeout,
            http.WriteError,
            http.PoolTimeout,
            http.RemoteProtocolError,
            http.UnsupportedProtocol,
        )


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out"))


_Key = tuple[bytes, bytes, int]  # scheme, host, port


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: what the socket delivers, parsed as it comes, kept
    until the response's reader takes it. One response at a time (`begin`)."""

    def __init__(self, key: _Key, errors: _Errors) -> None:
        self.key = key
        self._errors = errors
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False  # end of stream, or connection lost: not reusable
        self.error: BaseException | None = None  # why it was lost, when not cleanly
        self.idle_since = 0.0
        self._reader: asyncio.Future[None] | None = None  # a read waiting for data
        self._writer: asyncio.Future[None] | None = None  # a write waiting for room
        self._writing_paused = False
        # The wait a timeout applies to (its waiter and failure), its deadline, its timer.
        self._waiting: tuple[asyncio.Future[None], type[Exception]] | None = None
        self._deadline = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._parser: httptools.HttpResponseParser | None = None
        self.begin(head=False)
        self._parser = None  # idle: nothing is expected until a request is sent

    # --- one response ---------------------------------------------------------

    def begin(self, *, head: bool) -> None:
        """Expect the response of a request about to be sent (`head`: a HEAD request's,
        which has no body whatever its headers say)."""
        self._parser = httptools.HttpResponseParser(self)
        self._head = head
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self._informational = False
        self._until_close = False  # a body without a length: it ends with the connection
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._head_size = 0  # bytes received before the head was complete

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self._chunks

    async def send(self, data: bytes, timeout: float | None) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise self._errors.write(str(self.error or "connection closed"))
        self.transport.write(data)
        while self._writing_paused and not self.closed:
            self._writer = self._loop.create_future()
            try:
                await self._wait(self._writer, timeout, self._errors.write_timeout)
            finally:
                self._writer = None
        if self.error is not None:
            raise self._errors.write(str(self.error)) from self.error

    async def response_head(self, timeout: float | None) -> None:
        """Wait for the status line and headers of the response."""
        while not self.head_done:
            if self.closed:
                raise self._lost("Server disconnected without sending a response.")
            await self._read_wait(timeout)

    async def next_chunk(self, timeout: float | None) -> bytes | None:
        """The body's next bytes as they came; None at its end."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft()
                self._buffered -= len(data)
                if self._reading_paused and self._buffered <= _HIGH_WATER:
                    self._reading_paused = False
                    assert self.transport is not None
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self.closed:
                if self._until_close and self.error is None:
                    self.complete = True
                    return None
                raise self._lost("peer closed connection without sending complete message body")
            await self._read_wait(timeout)

    def close(self) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    def _lost(self, message: str) -> Exception:
        error = self.error
        if isinstance(error, _PARSE_ERRORS):
            return self._errors.protocol(f"{message} ({type(error).__name__})")
        if error is not None:
            failure = self._errors.read(str(error))
            failure.__cause__ = error
            return failure
        return self._errors.protocol(message)

    async def _read_wait(self, timeout: float | None) -> None:
        self._reader = self._loop.create_future()
        try:
            await self._wait(self._reader, timeout, self._errors.read_timeout)
        finally:
            self._reader = None

    async def _wait(
        self, waiter: asyncio.Future[None], timeout: float | None, error: type[Exception]
    ) -> None:
        """Wait for `waiter`, failing it with `error` after `timeout` seconds.

        One timer per connection, re-armed lazily (as the failover's watchdog): a read
        per token chunk would otherwise start and cancel a timer per token."""
        if timeout is None:
            await waiter
            return
        self._deadline = deadline = self._loop.time() + timeout
        self._waiting = (waiter, error)
        if self._timer is None or deadline < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._check)
        try:
            await waiter
        finally:
            self._waiting = None

    def _check(self) -> None:
        self._timer = None
        if self._waiting is None:
            return  # the next wait arms it again
        if self._loop.time() >= self._deadline:
            _expire(*self._waiting)
        else:
            self._timer = self._loop.call_at(self._deadline, self._check)

    # --- asyncio protocol -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` instances, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None or self.complete:
            # Bytes nobody asked for (on an idle connection, or after the response):
            # the connection is not in a state to be reused.
            self.close()
        else:
            try:
                parser.feed_data(data)
            except _PARSE_ERRORS as exc:  # not HTTP/1.1 (or an upgrade nobody asked for)
                self.error = exc
                self.close()
            if not self.head_done and not self.closed:
                self._head_size += len(data)
                if self._head_size > _MAX_HEAD:
                    self.error = _HeadTooLarge(f"more than {_MAX_HEAD} bytes of headers")
                    self.close()
            if self._buffered > _HIGH_WATER and not self._reading_paused:
                self._reading_paused = True
                assert self.transport is not None
                self.transport.pause_reading()
        _wake(self._reader)

    def eof_received(self) -> bool | None:
        self.closed = True
        _wake(self._reader)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if exc is not None and self.error is None:
            self.error = exc
        _wake(self._reader)
        _wake(self._writer)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        _wake(self._writer)

    # --- httptools' callbacks ---------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # Bytes after the response, read with its end: not its body, and the
            # connection is in no state to be reused (`data_received` closes it).
            raise _Unsolicited("a response nobody asked for")

    def on_status(self, status: bytes) -> None:
        self.reason = status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 100 Continue, 103 Early Hints: the real one follows
            self.headers = []
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        self._until_close = not any(
            name.lower() in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        self.head_done = True
        if self._head:
            self.complete = True  # no body, whatever its headers announce
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self.complete = True


class _Pool:
    """The connections of one client, kept alive between its requests."""

    def __init__(self, errors: _Errors, ssl_context: SSLContext, limits: Any) -> None:
        self._errors = errors
        self._ssl_context = ssl_context
        self._max_idle: int = (
            limits.max_keepalive_connections
            if limits.max_keepalive_connections is not None
            else 1 << 30
        )
        self._expiry: float | None = limits.keepalive_expiry
        self._slots = asyncio.Semaphore(
            limits.max_connections if limits.max_connections is not None else 1 << 30
        )
        self._idle: dict[_Key, list[_Connection]] = {}
        self._idle_count = 0

    async def acquire(self, key: _Key, timeouts: dict[str, float | None]) -> _Connection:
        """A connection for one request: an idle one to the same origin, else a new one."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._errors.pool_timeout("no connection available in time") from None
        else:
            await self._slots.acquire()  # a free slot: taken at once
        try:
            return self._reused(key) or await self._connect(key, timeouts.get("connect"))
        except BaseException:
            self._slots.release()
            raise

    def release(self, connection: _Connection) -> None:
        """The request is over: its connection kept for the next one, if it can be."""
        self._slots.release()
        if connection.reusable and self._idle_count < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.setdefault(connection.key, []).append(connection)
            self._idle_count += 1
        else:
            connection.close()

    def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        self._idle_count = 0

    def _reused(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            self._idle_count -= 1
            expired = self._expiry is not None and now - connection.idle_since > self._expiry
            if connection.closed or expired:
                connection.close()
                continue
            return connection
        return None

    async def _connect(self, key: _Key, timeout: float | None) -> _Connection:
        scheme, host, port = key
        ssl = self._ssl_context if scheme == b"https" else None
        name = host.decode("ascii")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                # asyncio sets TCP_NODELAY on TCP sockets, as httpcore does.
                _, connection = await loop.create_connection(
                    lambda: _Connection(key, self._errors),
                    name,
                    port,
                    ssl=ssl,
                    server_hostname=name if ssl is not None else None,
                )
        except TimeoutError as exc:
            raise self._errors.connect_timeout(str(exc) or "timed out") from exc
        except OSError as exc:  # ssl.SSLError among them
            raise self._errors.connect(str(exc)) from exc
        return connection


def _chunked(part: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(part), part)


class _Body:
    """A response's body, read from its connection; the connection goes back to the
    pool once the body is read whole (or is closed, when the reader stops before)."""

    def __init__(self, pool: _Pool, connection: _Connection, timeout: float | None) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            return
        try:
            while (data := await connection.next_chunk(self._timeout)) is not None:
                yield data
        except BaseException:
            self._release()
            raise
        self._release()

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection)


class _Body2(_Body, httpx2.AsyncByteStream):
    pass


class _Body1(_Body, httpx.AsyncByteStream):
    pass


class _Transport:
    """An HTTP/1.1 transport for httpx (or httpx2): its pool of `_Connection`s."""

    _http: ModuleType  # httpx or httpx2
    _body: type[_Body]
    _limits: Any  # the SDK's own defaults, in its library's `Limits`

    def __init__(
        self,
        *,
        limits: Any = None,
        verify: SSLContext | str | bool = True,
        trust_env: bool = True,
    ) -> None:
        http = self._http
        self._errors = _Errors.of(http)
        self._pool = _Pool(
            self._errors,
            http.create_ssl_context(verify=verify, trust_env=trust_env),
            limits or self._limits,
        )

    async def handle_async_request(self, request: Any) -> Any:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in _DEFAULT_PORTS:
            raise self._errors.unsupported(f"Request URL has an unsupported protocol '{scheme}'")
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        key = (scheme, url.raw_host, url.port or _DEFAULT_PORTS[scheme])
        connection = await self._pool.acquire(key, timeouts)
        try:
            connection.begin(head=request.method == "HEAD")
            await self._send(connection, request, timeouts.get("write"))
            await connection.response_head(timeouts.get("read"))
        except BaseException:
            connection.close()
            self._pool.release(connection)
            raise
        return self._http.Response(
            status_code=connection.status,
            headers=connection.headers,
            stream=self._body(self._pool, connection, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason},
        )

    async def _send(self, connection: _Connection, request: Any, timeout: float | None) -> None:
        """The request's head and body (chunked when its headers say so), its head and
        a body of one part in one write."""
        method = request.method.encode("ascii")
        head = [b"%b %b HTTP/1.1\r\n" % (method, request.url.raw_path)]
        chunked = False
        for name, value in request.headers.raw:
            head.append(b"%b: %b\r\n" % (name, value))
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True
        head.append(b"\r\n")
        data = b"".join(head)
        async for part in request.stream:
            if not part:
                continue
            data += _chunked(part) if chunked else part
            if len(data) >= _HIGH_WATER:
                await connection.send(data, timeout)
                data = b""
        if chunked:
            data += b"0\r\n\r\n"
        await connection.send(data, timeout)

    async def aclose(self) -> None:
        self._pool.close()


class AsyncioTransport(_Transport, httpx2.AsyncBaseTransport):
    """For httpx2 (the `openai` SDK)."""

    _http = httpx2
    _body = _Body2
    _limits = OPENAI_LIMITS


class LegacyAsyncioTransport(_Transport, httpx.AsyncBaseTransport):
    """For httpx (the `groq` SDK)."""

    _http = httpx
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
