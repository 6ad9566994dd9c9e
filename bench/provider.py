"""The bench's offline OpenAI-style provider: chat completion chunks, paced, in its own process.

`POST /v1/chat/completions` with `stream: true` answers `tokens` content chunks
(fewer when the body's `max_tokens` says so), the first one `interval` after the
request and each next one `interval` later on a fixed schedule (event-loop lag
does not accumulate), then the finish chunk, the usage chunk when
`stream_options.include_usage` is set, and `[DONE]`. HTTP/1.1 keep-alive, frames
encoded once, so the provider costs little CPU and the same answer reaches the
direct client and livechat alike. Run standalone:

    python -m bench.provider --port 8090 --tokens 50 --interval-ms 20

With `--faults F` (`make chaos`) a fraction F of the requests fail as providers do,
in equal parts: 429 with `Retry-After`, 503, or a stream cut in its middle (the
connection closed without the finish).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

__all__ = ["PATH", "RunningProvider", "answer_text", "running_provider"]

PATH = "/v1/chat/completions"
_WORDS = ("The", "river", "carries", "silt", "from", "the", "glacier", "to", "the", "sea.")
_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_END = b"0\r\n\r\n"


def _token(i: int) -> str:
    return _WORDS[i % len(_WORDS)] + " "


def answer_text(tokens: int) -> str:
    """The whole answer of `tokens` tokens, as a client must see it joined."""
    return "".join(_token(i) for i in range(tokens))


def _frame(payload: dict[str, Any] | str) -> bytes:
    data = b"data: " + (payload if isinstance(payload, str) else json.dumps(payload)).encode()
    data += b"\n\n"
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


class _Frames:
    """Every frame of the answers for one model name, encoded once."""

    def __init__(self, model: str, tokens: int) -> None:
        base: dict[str, Any] = {"id": "chatcmpl-bench", "object": "chat.completion.chunk"}
        base |= {"created": int(time.time()), "model": model}

        def chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return {**base, "choices": [choice]}

        self.role = _frame(chunk({"role": "assistant", "content": ""}))
        self.tokens = [_frame(chunk({"content": _token(i)})) for i in range(tokens)]
        self.finish = _frame(chunk({}, "stop"))
        self.done = _frame("[DONE]")
        self._base = base

    def usage(self, prompt: int, completion: int) -> bytes:
        counts = {"prompt_tokens": prompt, "completion_tokens": completion}
        counts["total_tokens"] = prompt + completion
        return _frame({**self._base, "choices": [], "usage": counts})


_REFUSALS = (
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Type: application/json\r\n"
    b'Content-Length: 64\r\n\r\n{"error": {"message": "slow down", "type": "rate_limit_error"}}\n',
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b'Content-Length: 60\r\n\r\n{"error": {"message": "overloaded", "type": "server_error"}}',
)


class _Server:
    def __init__(self, tokens: int, interval: float, faults: float = 0.0) -> None:
        self._tokens = tokens
        self._interval = interval
        self._faults = faults
        self._random = random.Random()
        self._frames: dict[str, _Frames] = {}

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
            while await self._exchange(reader, writer):
                pass
        writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its answer on a kept-alive connection; False at its end."""
        request_line = await reader.readline()
        if not request_line:
            return False
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = json.loads(await reader.readexactly(length)) if length else {}
        if method != "POST" or target.split("?", 1)[0] != PATH or not body.get("stream"):
            writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return True
        if self._random.random() < self._faults:
            kind = self._random.randrange(3)
            if kind < 2:
                writer.write(_REFUSALS[kind])
                await writer.drain()
                return True
            await self._stream(body, writer, cut=True)
            return False  # the connection goes with the cut stream
        await self._stream(body, writer)
        return True

    async def _stream(
        self, body: dict[str, Any], writer: asyncio.StreamWriter, *, cut: bool = False
    ) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        model = str(body.get("model", "bench"))
        frames = self._frames.get(model) or self._frames.setdefault(
            model, _Frames(model, self._tokens)
        )
        limit = body.get("max_completion_tokens") or body.get("max_tokens") or self._tokens
        count = min(self._tokens, int(limit))
        writer.write(_HEAD)
        for i in range(count):
            if cut and i == count // 2:
                return  # mid-stream: no finish, and the caller closes the connection
            await asyncio.sleep(max(started + (i + 1) * self._interval - loop.time(), 0.0))
            writer.write(frames.role + frames.tokens[i] if i == 0 else frames.tokens[i])
            await writer.drain()
        tail = frames.finish
        if (body.get("stream_options") or {}).get("include_usage"):
            words = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", ()))
            tail += frames.usage(words, count)
        writer.write(tail + frames.done + _END)
        await writer.drain()


async def _serve(port: int, tokens: int, interval: float, faults: float = 0.0) -> None:
    server = await asyncio.start_server(
        _Server(tokens, interval, faults).handle, "127.0.0.1", port, backlog=4096
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@dataclass(frozen=True, slots=True)
class RunningProvider:
    url: str  # the root: `url + PATH` is the completions endpoint
    process: psutil.Process


@contextlib.contextmanager
def running_provider(
    tokens: int, interval_ms: float, faults: float = 0.0
) -> Iterator[RunningProvider]:
    """The provider in a process of its own (its CPU is its own), stopped whatever happens."""
    command = [sys.executable, "-m", "bench.provider", "--port", "0"]
    command += ["--tokens", str(tokens), "--interval-ms", f"{interval_ms:g}"]
    command += ["--faults", f"{faults:g}"]
    child = subprocess.Popen(
        command, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        yield RunningProvider(f"http://127.0.0.1:{port}", psutil.Process(child.pid))
    finally:
        child.terminate()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.provider", description=__doc__)
    parser.add_argument("--port", type=int, default=8090, help="0: any free one (printed)")
    parser.add_argument("--tokens", type=int, default=50)
    parser.add_argument("--interval-ms", type=float, default=20.0)
    parser.add_argument("--faults", type=float, default=0.0, help="fraction of failed requests")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.tokens, args.interval_ms / 1000, args.faults))


if __name__ == "__main__":
    main()
