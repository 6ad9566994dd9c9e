"""Conversations through the gateway: half over SSE, half over WebSocket, each in its own."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial

from websockets.asyncio.client import ClientConnection, connect

from bench.clients import sse_answer, ws_answer
from bench.http import LeanClient
from bench.stats import StreamTiming
from bench.system import ws_url
from bench.workload import prompt, stagger
from devstack.runner import DevStack

__all__ = ["Answer", "Conversations", "run_conversations", "run_count", "run_until"]

# One message of conversation k, round r: its timing.
Answer = Callable[[str], Awaitable[StreamTiming]]


class Conversations:
    """Opens the transports of N conversations and sends their messages."""

    def __init__(self, stack: DevStack, count: int) -> None:
        self._stack = stack
        self.count = count
        self._tag = uuid.uuid4().hex[:6]

    def conversation_id(self, k: int) -> str:
        return f"bench-{self._tag}-{k}"

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[list[Answer]]:
        """An answer function per conversation: even ones SSE, odd ones WebSocket."""
        async with contextlib.AsyncExitStack() as exits:
            client = await exits.enter_async_context(
                LeanClient(self._stack.gateway_url, max_connections=self.count + 8)
            )
            sockets: dict[int, ClientConnection] = {}
            url = ws_url(self._stack)

            async def open_ws(k: int) -> None:
                sockets[k] = await exits.enter_async_context(
                    connect(url, open_timeout=30, max_queue=None, compression=None)
                )

            await asyncio.gather(*(open_ws(k) for k in range(1, self.count, 2)))
            answers: list[Answer] = [
                partial(ws_answer, sockets[k], self.conversation_id(k))
                if k in sockets
                else partial(sse_answer, client, self.conversation_id(k))
                for k in range(self.count)
            ]
            yield answers


async def run_conversations(
    answers: list[Answer], *, rounds: int, period: float
) -> list[StreamTiming]:
    """Each conversation sends `rounds` messages back to back, starts staggered over `period`."""

    async def conversation(k: int, answer: Answer) -> list[StreamTiming]:
        await asyncio.sleep(stagger(k, len(answers), period))
        return [await answer(prompt(k, r)) for r in range(rounds)]

    runs = await asyncio.gather(*(conversation(k, a) for k, a in enumerate(answers)))
    return [timing for run in runs for timing in run]


async def run_until(answers: list[Answer], seconds: float) -> tuple[list[StreamTiming], float]:
    """Every conversation sends messages back to back until `seconds` have passed."""
    started = time.perf_counter()
    deadline = started + seconds

    async def conversation(k: int, answer: Answer) -> list[StreamTiming]:
        timings, r = [], 0
        while time.perf_counter() < deadline:
            timings.append(await answer(prompt(k, r)))
            r += 1
        return timings

    runs = await asyncio.gather(*(conversation(k, a) for k, a in enumerate(answers)))
    return [timing for run in runs for timing in run], time.perf_counter() - started


async def run_count(
    answers: list[Answer], total: int, *, period: float = 0.0
) -> tuple[list[StreamTiming], float]:
    """The conversations, starts staggered over `period`, send messages back to back until
    `total` answers were asked for; the seconds until the last one ended."""
    started = time.perf_counter()
    asked = 0

    async def conversation(k: int, answer: Answer) -> list[StreamTiming]:
        nonlocal asked
        await asyncio.sleep(stagger(k, len(answers), period))
        timings: list[StreamTiming] = []
        while asked < total:
            asked += 1
            timings.append(await answer(prompt(k, len(timings))))
        return timings

    runs = await asyncio.gather(*(conversation(k, a) for k, a in enumerate(answers)))
    return [timing for run in runs for timing in run], time.perf_counter() - started
