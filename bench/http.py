"""A lean HTTP/1.1 client for the bench's streamed answers: keep-alive connections on
asyncio streams, responses parsed by httptools (the parser uvicorn uses).

The bench measures the system, so its client must cost little CPU per event: with
httpx (its pool, h11's event machine and anyio under every chunk) the bench process
spent more CPU per streamed answer than any service, and on a 2-core machine that
CPU is taken from what is measured, the provider called directly included. This
client does only what the bench asks: a POST with a JSON body to one server, its
response's status and its body chunks as they arrive (chunked or sized).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

__all__ = ["HttpError", "LeanClient", "LeanResponse"]

_READ = 65536
# After the caller stopped reading (it had what it wanted, e.g. `done`), the rest of the
# response is read for at most this long so that its connection can be used again.
_DRAIN_SECONDS = 1.0


class HttpError(Exception):
    """The connection failed or the server's response could not be parsed."""


class _ClosedUnread(HttpError):
    """A kept-alive connection turned out closed before any byte of the response: the
    server closed it while it was idle (its keep-alive timeout), so it never took the
    request, which may be sent again on a new connection."""


class LeanResponse:
    """One response: its status, then its body chunks (`aiter_raw`) or all of it."""

    __slots__ = ("_connection", "status_code")

    def __init__(self, connection: _Connection, status_code: int) -> None:
        self._connection = connection
        self.status_code = status_code

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked framing removed), until the response ends."""
        connection = self._connection
        while True:
            if connection.body:
                chunks, connection.body = connection.body, []
                for chunk in chunks:
                    yield chunk
            if connection.complete:
                return
            await connection.feed()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])


class _Connection:
    """One keep-alive connection; one response at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser: httptools.HttpResponseParser | None = None
        self.body: list[bytes] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.answered = False  # a byte of the current response came

    # httptools' callbacks
    def on_headers_complete(self) -> None:
        self.headers_done = True
        assert self._parser is not None
        self.keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True

    async def request(self, head: bytes, body: bytes) -> LeanResponse:
        self._parser = httptools.HttpResponseParser(self)
        self.body, self.headers_done, self.keep_alive, self.complete = [], False, False, False
        self.answered = False
        try:
            self._writer.write(head + body)
            while not self.headers_done:
                await self.feed()
        except (ConnectionResetError, BrokenPipeError) as error:
            if self.answered:
                raise HttpError(f"connection lost: {error}") from error
            raise _ClosedUnread(f"closed before any response: {error}") from error
        except OSError as error:
            raise HttpError(f"connection failed: {error}") from error
        return LeanResponse(self, self._parser.get_status_code())

    async def feed(self) -> None:
        data = await self._reader.read(_READ)
        if not data:
            if not self.answered:
                raise _ClosedUnread("the server closed the connection before any response")
            raise HttpError("the server closed the connection")
        self.answered = True
        assert self._parser is not None
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            raise HttpError(f"unparsable response: {error}") from error

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive

    async def finish(self) -> bool:
        """Read what is left of the response (briefly): True when it can be used again."""
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                while not self.complete:
                    self.body.clear()
                    await self.feed()
        except (TimeoutError, HttpError, OSError):
            return False
        return self.reusable

    @property
    def open(self) -> bool:
        """Not closed by the server while it was idle (as far as this side has seen)."""
        return not self._reader.at_eof() and not self._writer.is_closing()

    def close(self) -> None:
        self._writer.close()


class LeanClient:
    """POSTs to one server (`base_url`), at most `max_connections` at once."""

    def __init__(self, base_url: str, *, max_connections: int) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None:
            raise ValueError(f"an http:// base URL, not {base_url!r}")
        self._host = url.hostname
        self._port = url.port or 80
        self._prefix = url.path.rstrip("/")
        self._authority = url.netloc
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()  # every connection, idle or in use
        self._closed = False

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection, those of streams still being read too."""
        self._closed = True
        self._idle = []
        for connection in self._open:
            connection.close()
        self._open.clear()

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: object,  # named as httpx names it: the body, sent as JSON
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[LeanResponse]:
        """Send the request; the response, read within the block (leaving it reads the
        rest of the response for at most a second, so that the connection is used
        again). A failed connection or a response that cannot be parsed raise
        `HttpError`; the request is sent again only when a kept-alive connection
        turns out closed before any byte of its response."""
        body = _dumps(json)
        lines = [
            f"{method} {self._prefix}{path} HTTP/1.1",
            f"Host: {self._authority}",
            "Content-Type: application/json",
            f"Content-Length: {len(body)}",
        ]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        async with self._slots:
            connection, kept = await self._connection()
            reusable = False
            try:
                try:
                    response = await connection.request(head, body)
                except _ClosedUnread:
                    if not kept:
                        raise
                    # Closed by the server while idle: once more on a new connection,
                    # as any HTTP client does.
                    self._discard(connection)
                    connection, _ = await self._connection(new=True)
                    response = await connection.request(head, body)
                yield response
                reusable = await connection.finish()
            finally:
                if reusable and not self._closed:
                    self._idle.append(connection)
                else:
                    self._discard(connection)

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def _connection(self, *, new: bool = False) -> tuple[_Connection, bool]:
        """A connection, and whether it was kept from an earlier request."""
        while self._idle and not new:
            connection = self._idle.pop()
            if connection.open:
                return connection, True
            self._discard(connection)
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as error:
            raise HttpError(f"cannot connect: {error}") from error
        connection = _Connection(reader, writer)
        self._open.add(connection)
        return connection, False


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
