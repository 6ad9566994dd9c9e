"""The context request-reply on a plain subscription (a real nats-server): answers in
parallel up to its concurrency, leaves a bad or failing request unanswered, and answers
the requests in hand before it stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats
import pytest
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout

from contracts import subjects
from contracts.events import ContextMessage
from contracts.rpc import ContextReply, ContextRequest
from memory.context.replier import ContextReplier


class Builder:
    """Echoes the query after `delay`; a query "boom" fails."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.running = 0
        self.most = 0

    async def build(self, request: ContextRequest) -> ContextReply:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay)
            if request.query == "boom":
                raise ConnectionError("database away")
            echo = ContextMessage(role="user", content=request.query or "")
            return ContextReply(messages=(echo,))
        finally:
            self.running -= 1


def ask(query: str) -> bytes:
    request = ContextRequest(
        conversation_id="c1", user_id="alice", reply_id="r1", user_message_id="m1", query=query
    )
    return request.model_dump_json().encode()


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def start(nc: Client, builder: Builder, concurrency: int = 2) -> ContextReplier:
    replier = ContextReplier(
        builder,  # type: ignore[arg-type]
        queue="memory",
        concurrency=concurrency,
    )
    await replier.start(nc)
    await nc.flush()
    return replier


async def test_requests_are_answered_up_to_the_concurrency_at_once(nc: Client) -> None:
    builder = Builder(delay=0.05)
    replier = await start(nc, builder)
    try:
        answers = await asyncio.gather(
            *(nc.request(subjects.MEMORY_CONTEXT, ask(f"q{n}"), timeout=5) for n in range(6))
        )
    finally:
        await replier.stop(1)
    contents = [ContextReply.model_validate_json(a.data).messages[0].content for a in answers]
    assert contents == [f"q{n}" for n in range(6)]
    assert builder.most == 2


async def test_a_bad_or_failing_request_gets_no_answer(nc: Client) -> None:
    replier = await start(nc, Builder())
    try:
        for payload in (b"{not json", ask("boom")):
            with pytest.raises(NatsTimeout):
                await nc.request(subjects.MEMORY_CONTEXT, payload, timeout=0.3)
        answer = await nc.request(subjects.MEMORY_CONTEXT, ask("fine"), timeout=5)
    finally:
        await replier.stop(1)
    assert ContextReply.model_validate_json(answer.data).messages[0].content == "fine"


async def test_stopping_answers_the_requests_in_hand_first(nc: Client) -> None:
    replier = await start(nc, Builder(delay=0.2))
    pending = asyncio.ensure_future(nc.request(subjects.MEMORY_CONTEXT, ask("late"), timeout=5))
    await asyncio.sleep(0.05)
    await replier.stop(5)

    assert ContextReply.model_validate_json((await pending).data).messages[0].content == "late"
