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
        self._writer.write(head + body)
        while not self.headers_done:
            await self.feed()
        return LeanResponse(self, self._parser.get_status_code())

    async def feed(self) -> None:
        data = await self._reader.read(_READ)
        if not data:
            raise HttpError("the server closed the connection")
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
        self._authority = url.netloc.encode()
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: list[_Connection] = []

    async def __aenter__(self) -> LeanClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        json: object,
        headers: dict[str, str] | None = None,
    ) -> AsyncIterator[LeanResponse]:
        """Send the request; the response, read within the block. Connection errors
        raise `HttpError` (or OSError), as a response that cannot be parsed does."""
        body = _dumps(json)
        lines = [
            f"{method} {self._prefix}{path} HTTP/1.1",
            f"Host: {self._authority.decode()}",
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
                except (HttpError, OSError) as error:
                    if not kept:
                        raise HttpError(f"request failed: {error}") from error
                    # A kept-alive connection the server closed meanwhile (its idle
                    # timeout): once more on a new one, as any HTTP client does.
                    connection.close()
                    connection, kept = await self._connection(new=True)
                    response = await connection.request(head, body)
                yield response
                reusable = await connection.finish()
            finally:
                if reusable:
                    self._idle.append(connection)
                else:
                    connection.close()

    async def _connection(self, *, new: bool = False) -> tuple[_Connection, bool]:
        """A connection, and whether it was kept from an earlier request."""
        while self._idle and not new:
            connection = self._idle.pop()
            if connection.open:
                return connection, True
            connection.close()
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as error:
            raise HttpError(f"cannot connect: {error}") from error
        return _Connection(reader, writer), False


def _dumps(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
