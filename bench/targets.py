"""Where the bench provider's answers are asked for: directly, or through SSE, WebSocket, OpenAI."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial

from websockets.asyncio.client import ClientConnection, connect

from bench.clients import sse_answer, ws_answer
from bench.completions import completion_answer
from bench.http import LeanClient
from bench.stats import StreamTiming
from bench.through import Answer

__all__ = ["NAMES", "TARGETS", "Endpoints", "open_answers"]

TARGETS = ("direct", "sse", "ws", "openai")
NAMES = {"direct": "direct", "sse": "SSE", "ws": "WebSocket", "openai": "OpenAI"}

_OPENING_AT_ONCE = 50


@dataclass(frozen=True, slots=True)
class Endpoints:
    gateway_url: str
    ws_url: str
    provider_url: str
    alias: str  # the livechat model alias that routes to the provider
    provider_model: str  # the model id livechat sends the provider (LIVECHAT_OPENAI_MODEL)


def _client(base_url: str, count: int) -> LeanClient:
    return LeanClient(base_url, max_connections=count + 8)


@contextlib.asynccontextmanager
async def open_answers(
    endpoints: Endpoints, targets: Sequence[str], *, max_tokens: int | None = None
) -> AsyncIterator[list[Answer]]:
    """An answer function per conversation k, through `targets[k]`; each keeps its text."""
    tag = uuid.uuid4().hex[:6]
    gate = asyncio.Semaphore(_OPENING_AT_ONCE)
    async with contextlib.AsyncExitStack() as exits:
        gateway = await exits.enter_async_context(_client(endpoints.gateway_url, len(targets)))
        provider = await exits.enter_async_context(_client(endpoints.provider_url, len(targets)))

        async def socket() -> ClientConnection:
            async with gate:
                return await exits.enter_async_context(
                    connect(endpoints.ws_url, open_timeout=30, max_queue=None, compression=None)
                )

        ws = [k for k, target in enumerate(targets) if target == "ws"]
        sockets = dict(zip(ws, await asyncio.gather(*(socket() for _ in ws)), strict=True))

        def answer(k: int, target: str) -> Answer:
            conversation_id = f"bench-{tag}-{k}"
            call: Callable[..., Awaitable[StreamTiming]]
            args: tuple[object, ...]
            model = endpoints.alias
            if target == "direct":
                call, args = completion_answer, (provider, "direct")
                model = endpoints.provider_model
            elif target == "openai":
                call, args = completion_answer, (gateway, "openai")
            elif target == "ws":
                call, args = ws_answer, (sockets[k], conversation_id)
            else:
                call, args = sse_answer, (gateway, conversation_id)
            return partial(call, *args, model=model, max_tokens=max_tokens, keep_text=True)

        yield [answer(k, target) for k, target in enumerate(targets)]
