"""A local stand-in for the Gemini API (`:streamGenerateContent?alt=sse`), scriptable per call.

A real HTTP/1.1 server (asyncio streams, chunked SSE) on a free 127.0.0.1 port, run in a
background thread so sync and async tests can use it alike:

    with FakeGemini() as fake:
        fake.push(rate_limited(retry_delay="2s"), ok(["Hello", " world"]))
        # point google-genai at fake.base_url (HttpOptions.base_url or
        # GOOGLE_GEMINI_BASE_URL)

Each request takes the next scenario of the queue (`default` when it is empty) and is
recorded in `requests` (path, headers without the key's value, JSON body). Standalone,
for manual checks of `make dev`:

    python tests/support/fake_gemini.py --port 8089 --scenario rate_limited --scenario ok
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FakeGemini",
    "GeminiUsage",
    "RecordedRequest",
    "Scenario",
    "bad_request",
    "calls",
    "error_after",
    "invalid_key",
    "ok",
    "permission_denied",
    "prompt_blocked",
    "rate_limited",
    "safety",
    "server_error",
    "stall_after",
    "unauthenticated",
    "unavailable",
]

_API_KEY_HEADER = "x-goog-api-key"
_REDACTED = "<redacted>"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class GeminiUsage:
    prompt: int
    candidates: int
    thoughts: int = 0

    def wire(self) -> dict[str, int]:
        body = {
            "promptTokenCount": self.prompt,
            "candidatesTokenCount": self.candidates,
            "totalTokenCount": self.prompt + self.candidates + self.thoughts,
        }
        if self.thoughts:
            body["thoughtsTokenCount"] = self.thoughts
        return body


@dataclass(frozen=True, slots=True)
class Scenario:
    """What one call gets. Build them with the functions below."""

    chunks: tuple[str, ...] = ()
    usage: GeminiUsage | None = None
    finish_reason: str | None = "STOP"
    block_reason: str | None = None  # promptFeedback.blockReason, no candidates
    # An HTTP error answer instead of a stream:
    status: int = 200
    error_body: dict[str, Any] | None = None
    retry_after: str | None = None  # the Retry-After header
    # A stream that breaks after `len(chunks)` chunks:
    then: Literal["finish", "drop", "error_frame", "stall"] = "finish"
    # `functionCall` objects (`{"name", "args"}`), as the parts of one last frame.
    function_calls: tuple[dict[str, Any], ...] = ()
    signature: str | None = None  # the base64 `thoughtSignature` of each call's part


def _error(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def ok(
    chunks: list[str] | tuple[str, ...] = ("Hello", " from", " Gemini."),
    usage: GeminiUsage | None = GeminiUsage(prompt=11, candidates=3),
    finish_reason: str = "STOP",
) -> Scenario:
    """A normal stream; `usage=None` leaves usageMetadata out."""
    return Scenario(chunks=tuple(chunks), usage=usage, finish_reason=finish_reason)


def calls(
    *function_calls: dict[str, Any],
    chunks: list[str] | tuple[str, ...] = (),
    usage: GeminiUsage | None = GeminiUsage(prompt=25, candidates=9),
    signature: str | None = None,
) -> Scenario:
    """An answer that calls functions: a frame of `functionCall` parts (after the text
    `chunks`), ending with STOP as Gemini does; `signature`: their `thoughtSignature`."""
    return Scenario(
        chunks=tuple(chunks),
        usage=usage,
        function_calls=tuple(function_calls),
        signature=signature,
    )


def safety(chunks: list[str] | tuple[str, ...] = ()) -> Scenario:
    """The answer is stopped by the safety filter (finishReason SAFETY)."""
    return Scenario(
        chunks=tuple(chunks),
        usage=GeminiUsage(prompt=9, candidates=len(chunks)),
        finish_reason="SAFETY",
    )


def prompt_blocked(reason: str = "SAFETY") -> Scenario:
    """The prompt itself is blocked: promptFeedback.blockReason, no candidates."""
    return Scenario(usage=GeminiUsage(prompt=9, candidates=0), block_reason=reason)


def rate_limited(retry_delay: str | None = "2s", retry_after: str | None = None) -> Scenario:
    """429 RESOURCE_EXHAUSTED, with a RetryInfo detail and/or a Retry-After header."""
    details: list[dict[str, Any]] = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [{"quotaMetric": "generate_content_free_tier_requests"}],
        }
    ]
    if retry_delay is not None:
        details.append(
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}
        )
    body = _error(429, "RESOURCE_EXHAUSTED", "You exceeded your current quota.", details)
    return Scenario(status=429, error_body=body, retry_after=retry_after)


def server_error(status: int = 500) -> Scenario:
    return Scenario(
        status=status, error_body=_error(status, "INTERNAL", "An internal error has occurred.")
    )


def unavailable() -> Scenario:
    return Scenario(status=503, error_body=_error(503, "UNAVAILABLE", "The model is overloaded."))


def invalid_key() -> Scenario:
    """What Google answers to a wrong API key: 400 INVALID_ARGUMENT, reason API_KEY_INVALID."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        }
    ]
    body = _error(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details
    )
    return Scenario(status=400, error_body=body)


def unauthenticated() -> Scenario:
    body = _error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
    return Scenario(status=401, error_body=body)


def permission_denied() -> Scenario:
    body = _error(403, "PERMISSION_DENIED", "The caller does not have permission.")
    return Scenario(status=403, error_body=body)


def bad_request(message: str = "Invalid value at 'contents[0]'.") -> Scenario:
    return Scenario(status=400, error_body=_error(400, "INVALID_ARGUMENT", message))


def error_after(
    chunks: list[str] | tuple[str, ...], mode: Literal["drop", "error_frame"] = "drop"
) -> Scenario:
    """Stream `chunks`, then break: drop the connection mid-body, or send an error frame."""
    return Scenario(chunks=tuple(chunks), finish_reason=None, then=mode)


def stall_after(
    chunks: list[str] | tuple[str, ...], *, prompt_tokens: int | None = None
) -> Scenario:
    """Stream `chunks`, then keep the connection open and silent until `release()`.

    `prompt_tokens`: each chunk carries usageMetadata with the prompt's count only, as
    Gemini sends mid-answer (the answer's count comes with the finish).
    """
    usage = None if prompt_tokens is None else GeminiUsage(prompt=prompt_tokens, candidates=0)
    return Scenario(chunks=tuple(chunks), usage=usage, finish_reason=None, then="stall")


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # lower-case names; the API key's value redacted
    body: Any
    api_key: bool  # whether an API key header was sent


@dataclass(slots=True)
class _Frames:
    """SSE frames of a stream scenario."""

    scenario: Scenario
    model: str
    frames: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        s = self.scenario
        if s.block_reason is not None:
            frame: dict[str, Any] = {"promptFeedback": {"blockReason": s.block_reason}}
            if s.usage is not None:
                frame["usageMetadata"] = s.usage.wire()
            self.frames.append(self._stamp(frame))
            return
        frames: list[list[dict[str, Any]]] = [[{"text": text}] for text in s.chunks]
        if s.function_calls:
            signed = {"thoughtSignature": s.signature} if s.signature else {}
            frames.append([{"functionCall": call, **signed} for call in s.function_calls])
        for i, parts in enumerate(frames):
            candidate: dict[str, Any] = {
                "content": {"role": "model", "parts": parts},
                "index": 0,
            }
            last = i == len(frames) - 1
            frame = {"candidates": [candidate]}
            if last and s.then == "finish":
                self._finish(frame)
            elif s.then == "stall" and s.usage is not None:
                count = s.usage.prompt
                frame["usageMetadata"] = {"promptTokenCount": count, "totalTokenCount": count}
            self.frames.append(self._stamp(frame))
        if not frames and s.then == "finish":
            frame = {"candidates": [{"content": {"role": "model", "parts": []}, "index": 0}]}
            self._finish(frame)
            self.frames.append(self._stamp(frame))

    def _finish(self, frame: dict[str, Any]) -> None:
        if self.scenario.finish_reason is not None:
            frame["candidates"][0]["finishReason"] = self.scenario.finish_reason
        if self.scenario.usage is not None:
            frame["usageMetadata"] = self.scenario.usage.wire()

    def _stamp(self, frame: dict[str, Any]) -> dict[str, Any]:
        frame["modelVersion"] = self.model
        frame["responseId"] = "fake-response-id"
        return frame


class FakeGemini:
    """The fake Gemini API; a context manager that serves on a background thread."""

    def __init__(
        self,
        *,
        port: int = 0,
        api_key: str | None = None,
        default: Scenario | None = None,
        repeat: bool = False,
    ) -> None:
        self._port = port
        # When set, a request with another key gets Google's API_KEY_INVALID answer.
        self._api_key = api_key
        self.default = default or ok()
        # With `repeat`, the queue cycles instead of being consumed (the CLI uses it).
        self._repeat = repeat
        self._queue: collections.deque[Scenario] = collections.deque()
        self._lock = threading.Lock()
        self.requests: list[RecordedRequest] = []
        self._disconnects = 0
        self._disconnected = threading.Condition(self._lock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._release: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None

    # --- control ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def push(self, *scenarios: Scenario) -> None:
        with self._lock:
            self._queue.extend(scenarios)

    def release(self) -> None:
        """Let every stalled stream (and later ones) finish their remaining frames."""
        loop, release = self._loop, self._release
        if loop is not None and release is not None:
            loop.call_soon_threadsafe(release.set)

    @property
    def disconnects(self) -> int:
        """How many streams the client closed before their end."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnects(self, count: int = 1, timeout: float = 10.0) -> bool:
        with self._disconnected:
            return self._disconnected.wait_for(lambda: self._disconnects >= count, timeout)

    def __enter__(self) -> FakeGemini:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fake-gemini", daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the fake Gemini server did not start")

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # stopped already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(10)

    # --- server ----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", self._port)
        self._port = self._server.sockets[0].getsockname()[1]
        self._started.set()
        await self._stop.wait()
        self._server.close()
        # End the connections still open (stalled streams), so stop() never hangs.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._server.wait_closed()

    def _next(self) -> Scenario:
        with self._lock:
            if not self._queue:
                return self.default
            scenario = self._queue.popleft()
            if self._repeat:
                self._queue.append(scenario)
            return scenario

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # the server is stopping
        finally:
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, path, _ = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        key = headers.get(_API_KEY_HEADER)
        if key is not None:
            headers[_API_KEY_HEADER] = _REDACTED
        body: Any = json.loads(raw) if raw else None
        with self._lock:
            self.requests.append(RecordedRequest(method, path, headers, body, key is not None))

        prefix = "/v1beta/models/"
        suffix = ":streamGenerateContent"
        route = path.split("?", 1)[0]
        if method != "POST" or not route.startswith(prefix) or not route.endswith(suffix):
            await self._send_error(
                writer, Scenario(status=404, error_body=_error(404, "NOT_FOUND", "Not found."))
            )
            return True
        if self._api_key is not None and key != self._api_key:
            await self._send_error(writer, invalid_key())
            return True
        scenario = self._next()
        if scenario.status != 200:
            await self._send_error(writer, scenario)
            return True
        return await self._send_stream(reader, writer, scenario, route[len(prefix) : -len(suffix)])

    async def _send_error(self, writer: asyncio.StreamWriter, scenario: Scenario) -> None:
        payload = json.dumps(scenario.error_body or {}).encode()
        lines = [
            f"HTTP/1.1 {scenario.status} {_REASONS.get(scenario.status, 'Error')}",
            "Content-Type: application/json; charset=UTF-8",
            f"Content-Length: {len(payload)}",
        ]
        if scenario.retry_after is not None:
            lines.append(f"Retry-After: {scenario.retry_after}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _send_stream(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        scenario: Scenario,
        model: str,
    ) -> bool:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/event-stream\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(head.encode())
        try:
            for frame in _Frames(scenario, model).frames:
                await self._chunk(writer, b"data: " + json.dumps(frame).encode() + b"\r\n\r\n")
            if scenario.then == "drop":
                writer.transport.abort()  # no terminating chunk: the body is cut short
                return False
            if scenario.then == "error_frame":
                body = _error(503, "UNAVAILABLE", "The model is overloaded.")
                await self._chunk(writer, b"data: " + json.dumps(body).encode() + b"\r\n\r\n")
            if scenario.then == "stall":
                if not await self._stall(reader):
                    return False
                frame = {"candidates": [{"content": {"role": "model", "parts": []}, "index": 0}]}
                frame["candidates"][0]["finishReason"] = "STOP"
                await self._chunk(writer, b"data: " + json.dumps(frame).encode() + b"\r\n\r\n")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            self._count_disconnect()
            return False
        return True

    async def _stall(self, reader: asyncio.StreamReader) -> bool:
        """Wait for `release()`; False (and a disconnect counted) if the client hangs up."""
        assert self._release is not None
        eof = asyncio.ensure_future(reader.read(1))
        released = asyncio.ensure_future(self._release.wait())
        done, _ = await asyncio.wait({eof, released}, return_when=asyncio.FIRST_COMPLETED)
        if eof in done:
            released.cancel()
            self._count_disconnect()
            return False
        eof.cancel()
        return True

    async def _chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    def _count_disconnect(self) -> None:
        with self._disconnected:
            self._disconnects += 1
            self._disconnected.notify_all()


_CLI_SCENARIOS: dict[str, Callable[[], Scenario]] = {
    "ok": lambda: ok(
        ["Hello", " from", " the", " fake", " Gemini", " server."], GeminiUsage(11, 6)
    ),
    "rate_limited": rate_limited,
    "server_error": server_error,
    "unavailable": unavailable,
    "unauthenticated": unauthenticated,
    "invalid_key": invalid_key,
    "error_after": lambda: error_after(["Part of", " an answer"]),
    "stall": lambda: stall_after(["Part of", " an answer"]),
    "safety": lambda: safety(["I started"]),
    "prompt_blocked": prompt_blocked,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(_CLI_SCENARIOS),
        help="repeatable; the calls cycle through them (default: ok)",
    )
    parser.add_argument("--api-key", help="answer API_KEY_INVALID to any other key")
    args = parser.parse_args()
    fake = FakeGemini(port=args.port, api_key=args.api_key, repeat=True)
    fake.push(*(_CLI_SCENARIOS[name]() for name in args.scenario or ["ok"]))
    with fake:
        print(f"fake Gemini on {fake.base_url}  (GOOGLE_GEMINI_BASE_URL={fake.base_url})")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
