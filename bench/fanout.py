"""Many WebSocket clients of one conversation: fan-out of one generation, then a resume storm.

Fan-out: N sockets subscribe to one conversation, one more sends a message,
and every socket times the reply's first token and its `done` from that send.
Resume storm: N fresh sockets connect at once and subscribe with the
`last_event_id` of the reply's start, as clients do after a network drop;
each times the replay up to `done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect

from bench.clients import ANSWER_TIMEOUT, MODEL
from bench.stats import percentiles

__all__ = ["FanoutResult", "fanout_table", "run_fanout"]

_OPENING_AT_ONCE = 50


@dataclass(slots=True)
class FanoutResult:
    clients: int
    # Seconds from the send, one per socket that got the whole reply.
    first_token: list[float] = field(default_factory=list)
    done: list[float] = field(default_factory=list)
    complete: int = 0  # sockets that got every token of the reply, in order
    tokens: int = 0  # tokens of the reply
    # Seconds from the storm's start to each resumed socket's `done`.
    resumed: list[float] = field(default_factory=list)
    resumed_complete: int = 0
    storm_wall: float = 0.0
    errors: list[str] = field(default_factory=list)


async def _read_reply(
    ws: ClientConnection, since: float
) -> tuple[float | None, float | None, list[str], int | None]:
    """(first token, done, tokens, start's event id) of the next reply on this socket."""
    first: float | None = None
    tokens: list[str] = []
    start_id: int | None = None
    async with asyncio.timeout(ANSWER_TIMEOUT):
        while True:
            data = await ws.recv()
            now = time.perf_counter()
            frame = json.loads(data)
            kind = frame["type"]
            if kind == "start":
                start_id = frame["event_id"]
            elif kind == "token":
                if first is None:
                    first = now - since
                tokens.append(frame["content"])
            elif kind == "done":
                return first, now - since, tokens, start_id
            elif kind == "error":
                raise RuntimeError(f"error frame: {frame.get('code')}")


async def _subscribed(
    url: str, conversation_id: str, exits: contextlib.AsyncExitStack
) -> ClientConnection:
    ws = await exits.enter_async_context(
        connect(url, open_timeout=30, max_queue=None, compression=None)
    )
    await ws.send(json.dumps({"type": "subscribe", "conversation_id": conversation_id}))
    await ws.send('{"type":"ping"}')
    async with asyncio.timeout(30):
        while json.loads(await ws.recv())["type"] != "pong":
            pass  # presence of the others joining
    return ws


async def run_fanout(url: str, clients: int) -> FanoutResult:
    result = FanoutResult(clients)
    conversation_id = f"fanout-{uuid.uuid4().hex[:8]}"
    gate = asyncio.Semaphore(_OPENING_AT_ONCE)
    async with contextlib.AsyncExitStack() as exits:

        async def one() -> ClientConnection:
            async with gate:
                return await _subscribed(url, conversation_id, exits)

        listeners = await asyncio.gather(*(one() for _ in range(clients)))
        sender = await exits.enter_async_context(connect(url, open_timeout=30))
        message = {
            "type": "message",
            "conversation_id": conversation_id,
            "content": "fan-out",
            "model": MODEL,
        }
        sent = time.perf_counter()
        await sender.send(json.dumps(message))
        replies = await asyncio.gather(
            *(_read_reply(ws, sent) for ws in (sender, *listeners)), return_exceptions=True
        )
    reference: list[str] | None = None
    start_id: int | None = None
    for reply in replies:
        if isinstance(reply, BaseException):
            result.errors.append(type(reply).__name__)
            continue
        first, done, tokens, start = reply
        if reference is None:  # the sender's, which is not counted as a listener
            reference, start_id = tokens, start
            result.tokens = len(tokens)
            continue
        if first is not None and done is not None:
            result.first_token.append(first)
            result.done.append(done)
        result.complete += tokens == reference
    if start_id is not None and reference is not None:
        await _storm(url, conversation_id, start_id, reference, result)
    return result


async def _storm(
    url: str, conversation_id: str, after: int, reference: list[str], result: FanoutResult
) -> None:
    frame = json.dumps(
        {"type": "subscribe", "conversation_id": conversation_id, "last_event_id": after}
    )
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as exits:

        async def resume() -> tuple[float, bool]:
            ws = await exits.enter_async_context(
                connect(url, open_timeout=30, max_queue=None, compression=None)
            )
            await ws.send(frame)
            _, done, tokens, _ = await _read_reply(ws, started)
            assert done is not None
            return done, tokens == reference

        outcomes = await asyncio.gather(
            *(resume() for _ in range(result.clients)), return_exceptions=True
        )
        result.storm_wall = time.perf_counter() - started
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            result.errors.append(type(outcome).__name__)
            continue
        done, complete = outcome
        result.resumed.append(done)
        result.resumed_complete += complete


def _ms(values: list[float]) -> str:
    found = percentiles(values)
    if found is None:
        return "n/a"
    return f"{found.p50 * 1000:.1f} ms / {found.p99 * 1000:.1f} ms"


def fanout_table(result: FanoutResult) -> str:
    n = result.clients
    rows = [
        (f"fan-out: first token at {n} clients, p50 / p99", _ms(result.first_token)),
        (f"fan-out: done at {n} clients, p50 / p99", _ms(result.done)),
        (
            f"fan-out: clients with the whole reply ({result.tokens} token events)",
            f"{result.complete} of {n}",
        ),
        (f"resume storm: {n} clients replay to done, p50 / p99", _ms(result.resumed)),
        (f"resume storm: all {n} replayed within", f"{result.storm_wall * 1000:.1f} ms"),
        (
            "resume storm: clients with the whole reply, no gap or duplicate",
            f"{result.resumed_complete} of {n}",
        ),
    ]
    lines = ["| many clients, one conversation | value |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    lines.append("")
    failed = len(result.errors)
    lines.append(
        f"- One demo generation watched by {n} subscribed WebSockets (times from the send), "
        f"then {n} new sockets resuming it at once from its `start` ({failed} failed)."
    )
    return "\n".join(lines)
