"""A fake OpenAI-style chat completions server: Groq's and OpenAI's streaming wire.

A real HTTP/1.1 server on 127.0.0.1, written on asyncio streams so that a test can
drop a connection mid-body or keep one open in silence. It runs in its own thread,
so the sync context manager works from async tests too:

    with FakeOpenAI() as fake:
        fake.script(status(429, retry_after=2), ok(["Hel", "lo"]))
        provider = create_groq_provider(api_key="k", base_url=fake.url)
        ...
        fake.requests[0].body["messages"]

`POST /openai/v1/chat/completions` speaks the Groq flavour (usage in the last chunk's
`x_groq.usage`), `POST /v1/chat/completions` the OpenAI one (usage in a last chunk of
its own when `stream_options.include_usage` is set). Each call plays the next scripted
scenario, or the default one when the script is empty.

Standalone, for a manual check with `make dev`:

    python tests/support/fake_openai.py --port 8090 --scenario 429 --scenario ok
    GROQ_BASE_URL=http://127.0.0.1:8090 GROQ_API_KEY=anything make dev
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

__all__ = [
    "GROQ_PATH",
    "OPENAI_PATH",
    "RAW_PROVIDER_TEXT",
    "FakeOpenAI",
    "RecordedRequest",
    "Scenario",
    "call_deltas",
    "calls",
    "content_filter",
    "drop_after",
    "error_after",
    "ok",
    "stall_after",
    "status",
]

GROQ_PATH = "/openai/v1/chat/completions"
OPENAI_PATH = "/v1/chat/completions"
# In every error body the fake sends: tests assert that it never reaches users or logs.
RAW_PROVIDER_TEXT = "raw-provider-text org_7f3a internal detail"
DEFAULT_CHUNKS = ("Hello", " from", " the", " fake", " provider.")

Kind = Literal["ok", "status", "error_after", "drop_after", "stall_after", "garbled_after"]
Flavour = Literal["groq", "openai"]


@dataclass(frozen=True)
class Scenario:
    kind: Kind
    chunks: tuple[str, ...] = DEFAULT_CHUNKS
    usage: tuple[int, int] | None = (21, 5)  # (prompt, completion); None: none reported
    finish_reason: str = "stop"
    after: int = 0  # k: the text chunks sent before the error, drop or stall
    code: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    error: Mapping[str, Any] | None = None  # the error body, or the error frame
    # `delta.tool_calls` items, one chunk each, sent after the text chunks (before the
    # error, drop or stall of the other kinds). See `call_deltas`.
    tool_calls: tuple[Mapping[str, Any], ...] = ()


def ok(
    chunks: Iterable[str] = DEFAULT_CHUNKS,
    usage: tuple[int, int] | None = (21, 5),
    finish_reason: str = "stop",
) -> Scenario:
    return Scenario("ok", tuple(chunks), usage, finish_reason)


def call_deltas(
    call_id: str, name: str, arguments: str, *, index: int = 0, pieces: int = 3
) -> tuple[dict[str, Any], ...]:
    """A function call as Groq and OpenAI stream it: a first delta with its id, type and
    name (no arguments yet), then the JSON arguments in `pieces` parts."""
    first = {
        "index": index,
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": ""},
    }
    size = -(-len(arguments) // pieces)
    parts = [arguments[i : i + size] for i in range(0, len(arguments), size)]
    return (first, *({"index": index, "function": {"arguments": part}} for part in parts))


def calls(
    *deltas: Mapping[str, Any],
    chunks: Iterable[str] = (),
    usage: tuple[int, int] | None = (30, 12),
) -> Scenario:
    """An answer that calls functions (`call_deltas`), ending with `tool_calls`."""
    return Scenario("ok", tuple(chunks), usage, "tool_calls", tool_calls=tuple(deltas))


def content_filter(chunks: Iterable[str] = (), usage: tuple[int, int] | None = (21, 0)) -> Scenario:
    """A safety block: the stream ends with `finish_reason: content_filter`."""
    return Scenario("ok", tuple(chunks), usage, "content_filter")


_ERRORS: dict[int, dict[str, str]] = {
    401: {"type": "invalid_request_error", "code": "invalid_api_key"},
    403: {"type": "permission_denied"},
    404: {"type": "invalid_request_error", "code": "model_not_found"},
    429: {"type": "tokens", "code": "rate_limit_exceeded"},
}


def status(
    code: int,
    *,
    retry_after: float | str | None = None,
    retry_after_ms: float | None = None,
    error: Mapping[str, Any] | None = None,
) -> Scenario:
    """An HTTP error response with an OpenAI-style `{"error": ...}` body."""
    headers: list[tuple[str, str]] = []
    if retry_after is not None:
        headers.append(("retry-after", str(retry_after)))
    if retry_after_ms is not None:
        headers.append(("retry-after-ms", str(retry_after_ms)))
    default = _ERRORS.get(
        code, {"type": "internal_server_error" if code >= 500 else "invalid_request_error"}
    )
    body = error or {"message": f"Error {code}: {RAW_PROVIDER_TEXT}", **default}
    return Scenario("status", code=code, headers=tuple(headers), error=body)


def error_after(
    k: int, chunks: Iterable[str] = DEFAULT_CHUNKS, error: Mapping[str, Any] | None = None
) -> Scenario:
    """k text chunks, then a `data: {"error": ...}` frame (the HTTP status stays 200)."""
    frame = error or {
        "message": f"Service unavailable: {RAW_PROVIDER_TEXT}",
        "type": "internal_server_error",
    }
    return Scenario("error_after", tuple(chunks), after=k, error=frame)


def drop_after(
    k: int, chunks: Iterable[str] = DEFAULT_CHUNKS, tool_calls: Iterable[Mapping[str, Any]] = ()
) -> Scenario:
    """k text chunks (and the `tool_calls` deltas), then the connection is aborted mid-body."""
    return Scenario("drop_after", tuple(chunks), after=k, tool_calls=tuple(tool_calls))


def garbled_after(k: int, chunks: Iterable[str] = DEFAULT_CHUNKS) -> Scenario:
    """k text chunks, then an event whose data is not JSON, then the stream's end."""
    return Scenario("garbled_after", tuple(chunks), after=k)


def stall_after(k: int, chunks: Iterable[str] = DEFAULT_CHUNKS) -> Scenario:
    """k text chunks, then silence with the connection open until `release()` (the rest
    of the answer follows) or until the client closes it."""
    return Scenario("stall_after", tuple(chunks), after=k)


@dataclass
class RecordedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]  # lower-case names; the authorization value is redacted
    # The key the request was authorised with (`Authorization: Bearer <key>`).
    bearer: str = field(default="", repr=False)
    # How the server ended the call: "completed", "status", "error_frame", "dropped",
    # "client_closed" (the client went away before the end), "stopped".
    outcome: str | None = None
    ended: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def flavour(self) -> Flavour:
        return "groq" if self.path == GROQ_PATH else "openai"

    def finish(self, outcome: str) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.ended.set()


class FakeOpenAI:
    def __init__(
        self,
        *scenarios: Scenario,
        default: Scenario | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.default = default or ok()
        self.host = host
        self.port = port
        self.requests: list[RecordedRequest] = []
        self._script: deque[Scenario] = deque(scenarios)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stalls: list[asyncio.Event] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        """The server's root: the Groq SDK's base URL (`GROQ_BASE_URL`)."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """The OpenAI SDK's base URL."""
        return f"{self.url}/v1"

    def script(self, *scenarios: Scenario) -> None:
        """Queue scenarios for the next calls, in order."""
        self._script.extend(scenarios)

    def release(self) -> None:
        """Let every stalled call go on with the rest of its answer."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release_all)

    def wait_ended(self, index: int = -1, timeout: float = 10.0) -> str | None:
        """Block until call `index` ended on the server side; its outcome."""
        deadline = time.monotonic() + timeout
        while not self.requests and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.requests:
            return None
        record = self.requests[index]
        record.ended.wait(max(deadline - time.monotonic(), 0))
        return record.outcome

    # --- lifecycle -----------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._run, name="fake-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake OpenAI server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self.serve())

    async def serve(self) -> None:
        """Serve until `stop()` (or forever, standalone)."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
        self._release_all()
        for record in self.requests:
            record.finish("stopped")

    def _release_all(self) -> None:
        for stall in self._stalls:
            stall.set()
        self._stalls.clear()

    # --- one HTTP exchange ---------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        record: RecordedRequest | None = None
        try:
            request_line = await reader.readline()
            if not request_line:
                return
            method, target, _ = request_line.decode("latin-1").split(" ", 2)
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            raw = await reader.readexactly(length) if length else b""
            path = target.split("?", 1)[0]
            if method != "POST" or path not in (GROQ_PATH, OPENAI_PATH):
                await _send_json(
                    writer, 404, {"error": {"message": "Not found", "type": "not_found"}}
                )
                return
            bearer = headers.get("authorization", "").removeprefix("Bearer ")
            if "authorization" in headers:
                headers["authorization"] = "<redacted>"
            record = RecordedRequest(path, json.loads(raw or b"{}"), headers, bearer)
            self.requests.append(record)
            scenario = self._script.popleft() if self._script else self.default
            await self._play(scenario, record, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            if record is not None:
                record.finish("client_closed")
        finally:
            if not writer.transport.is_closing():
                writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _play(
        self,
        scenario: Scenario,
        record: RecordedRequest,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if scenario.kind == "status":
            await _send_json(writer, scenario.code, {"error": scenario.error}, scenario.headers)
            record.finish("status")
            return
        model = str(record.body.get("model", "fake-model"))
        sse = _Sse(writer, model, record.flavour)
        await sse.start()
        chunks = scenario.chunks
        if scenario.kind == "ok":
            await sse.finish(chunks, scenario, record.body)
            record.finish("completed")
            return
        head, rest = chunks[: scenario.after], chunks[scenario.after :]
        for chunk in head:
            await sse.text(chunk)
        for delta in scenario.tool_calls:
            await sse.tool_call(delta)
        if scenario.kind == "error_after":
            await sse.event({"error": scenario.error})
            await sse.end()
            record.finish("error_frame")
        elif scenario.kind == "garbled_after":
            await sse.raw('{"choices": [{"delta": {"content": "cut')
            await sse.end()
            record.finish("garbled")
        elif scenario.kind == "drop_after":
            writer.transport.abort()
            record.finish("dropped")
        elif await self._stall(reader):
            record.finish("client_closed")
        else:
            await sse.finish(rest, scenario, record.body)
            record.finish("completed")

    async def _stall(self, reader: asyncio.StreamReader) -> bool:
        """Wait for `release()`; True when the client closed the connection first."""
        released = asyncio.Event()
        self._stalls.append(released)
        closed = asyncio.ensure_future(reader.read(1))
        go_on = asyncio.ensure_future(released.wait())
        done, pending = await asyncio.wait({closed, go_on}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return closed in done


class _Sse:
    """A chunked `text/event-stream` body of chat completion chunks."""

    def __init__(self, writer: asyncio.StreamWriter, model: str, flavour: Flavour) -> None:
        self._writer = writer
        self._model = model
        self._flavour = flavour
        self._created = int(time.time())

    async def start(self) -> None:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n"
            "Transfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n"
        )
        self._writer.write(head.encode())
        extra = {"x_groq": {"id": "req_fake"}} if self._flavour == "groq" else {}
        await self.event(self._chunk({"role": "assistant", "content": ""}, None, extra))

    async def text(self, content: str) -> None:
        await self.event(self._chunk({"content": content}, None))

    async def tool_call(self, delta: Mapping[str, Any]) -> None:
        await self.event(self._chunk({"tool_calls": [dict(delta)]}, None))

    async def finish(
        self, chunks: Iterable[str], scenario: Scenario, body: Mapping[str, Any]
    ) -> None:
        for chunk in chunks:
            await self.text(chunk)
        if scenario.kind == "ok":
            for delta in scenario.tool_calls:
                await self.tool_call(delta)
        usage = None
        if scenario.usage is not None:
            prompt, completion = scenario.usage
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        extra: dict[str, Any] = {}
        if self._flavour == "groq" and usage is not None:
            extra = {"x_groq": {"id": "req_fake", "usage": usage}}
        await self.event(self._chunk({}, scenario.finish_reason, extra))
        options = body.get("stream_options") or {}
        if self._flavour == "openai" and usage is not None and options.get("include_usage"):
            last = self._chunk({}, None, {"usage": usage})
            last["choices"] = []
            await self.event(last)
        await self.end()

    async def event(self, data: Mapping[str, Any]) -> None:
        await self._write(f"data: {json.dumps(data)}\n\n")

    async def raw(self, data: str) -> None:
        await self._write(f"data: {data}\n\n")

    async def end(self) -> None:
        await self._write("data: [DONE]\n\n")
        self._writer.write(b"0\r\n\r\n")
        await self._writer.drain()

    async def _write(self, text: str) -> None:
        data = text.encode()
        self._writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await self._writer.drain()

    def _chunk(
        self, delta: dict[str, Any], finish: str | None, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **(extra or {}),
        }


async def _send_json(
    writer: asyncio.StreamWriter,
    code: int,
    body: Mapping[str, Any],
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    data = json.dumps(body).encode()
    lines = [f"HTTP/1.1 {code} Fake", "Content-Type: application/json"]
    lines += [f"Content-Length: {len(data)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
    await writer.drain()


def _named(name: str, after: int, retry_after: float, text: str) -> Scenario:
    chunks = [w + " " for w in text.split()]
    chunks[-1] = chunks[-1].rstrip()
    named = {
        "ok": ok(chunks),
        "429": status(429, retry_after=retry_after),
        "500": status(500),
        "401": status(401),
        "error_after": error_after(after, chunks),
        "drop_after": drop_after(after, chunks),
        "stall_after": stall_after(after, chunks),
        "content_filter": content_filter(chunks[:after]),
    }
    return named[name]


_SCENARIOS = (
    "ok",
    "429",
    "500",
    "401",
    "error_after",
    "drop_after",
    "stall_after",
    "content_filter",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=_SCENARIOS,
        help="repeatable: played in turn, the last one for every further call",
    )
    parser.add_argument("--after", type=int, default=3, help="k for *_after scenarios")
    parser.add_argument("--retry-after", type=float, default=2.0)
    parser.add_argument("--text", default="The quick brown fox jumps over the lazy dog, twice.")
    args = parser.parse_args()
    names = args.scenario or ["ok"]
    scenarios = [_named(n, args.after, args.retry_after, args.text) for n in names]
    fake = FakeOpenAI(*scenarios[:-1], default=scenarios[-1], host=args.host, port=args.port)
    print(
        f"fake OpenAI-style server: GROQ_BASE_URL={fake.url}  openai base_url={fake.openai_url}",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(fake.serve())


if __name__ == "__main__":
    main()
