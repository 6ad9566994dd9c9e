"""A request is generated a bounded number of times: one whose outcome can never be
stored ends with one `error` after the last attempt, each attempt billed once; a
request only waiting for memory is not counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from nats.js.api import DiscardPolicy

from contracts import ids, subjects, topology
from contracts.events import DoneEvent, ErrorEvent, StartEvent, StatusEvent, TokenEvent, Usage
from contracts.rpc import ContextReply
from inference import Completion, ProviderRequest
from inference.work_queue import ensure_consumer

_ATTEMPTS = 3


class ThreeTokens:
    """Answers every call with three tokens; counts the calls."""

    name = "demo"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        self.calls += 1
        for i in range(3):
            yield f"w{i} "
        yield Completion(usage=Usage.of(7, 3), finish_reason="stop")


async def test_a_reply_that_can_never_be_stored_ends_with_one_error_after_the_last_attempt(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    # The chat stream refuses every new message (full, discarding new ones): no
    # delivery can store its answer, each one fails after calling the provider.
    chat = (await bus.js.stream_info(topology.CHAT_STREAM)).config
    await bus.js.publish(subjects.chat_user("elsewhere"), b"{}")
    chat.max_msgs, chat.discard = 1, DiscardPolicy.NEW
    await bus.js.update_stream(chat)
    provider = ThreeTokens()
    bounded = settings.model_copy(update={"max_generation_attempts": _ATTEMPTS})
    await start_worker(bounded, providers={"demo": provider})
    request = make_request()
    await bus.publish(request)

    await bus.wait_ended(request)
    await bus.wait_idle()  # the request is done with, not redelivered again

    assert provider.calls == _ATTEMPTS
    events = await bus.events(request)
    ends = [e for e in events if isinstance(e, DoneEvent | ErrorEvent)]
    assert len(ends) == 1 and isinstance(ends[0], ErrorEvent)
    assert ends[0].code == "generation_interrupted" and ends[0].retryable
    # Each attempt billed once: what it streamed, under its own attempt id.
    usage = await bus.usage(request)
    assert sorted(u.attempt_id for u in usage) == [
        ids.attempt_id(request.message_id, delivery, 0) for delivery in range(1, _ATTEMPTS + 1)
    ]
    assert all(u.usage.completion_tokens == 3 for u in usage)


async def test_deliveries_while_memory_is_away_do_not_count_as_attempts(
    settings: Any, nc: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    asked: list[bytes] = []

    async def memory_back_late(msg: Any) -> None:
        asked.append(msg.data)
        if len(asked) <= 2 * _ATTEMPTS:
            await msg.respond(b"")  # not an answer: the worker tries again later
        else:
            await msg.respond(ContextReply().model_dump_json().encode())

    await nc.subscribe(subjects.MEMORY_CONTEXT, cb=memory_back_late)
    bounded = settings.model_copy(update={"max_generation_attempts": _ATTEMPTS})
    await start_worker(bounded)
    request = make_request()
    await bus.publish(request)

    await bus.wait_ended(request)
    assert len(asked) == 2 * _ATTEMPTS + 1
    ends = [e for e in await bus.events(request) if isinstance(e, DoneEvent | ErrorEvent)]
    assert len(ends) == 1 and isinstance(ends[0], DoneEvent)
    assert len(await bus.finished(request)) == 1


async def test_a_redelivery_leaves_the_reply_to_its_delivery_still_publishing(
    settings: Any, nc: Any, bus: Any, memory: Any, make_request: Any, start_worker: Any
) -> None:
    """A worker cut from NATS past its ack wait (its node lost, say) goes on answering,
    and the request comes again to another worker meanwhile. That one must not answer
    it a second time beside the first (tokens interleaved, the first's call billed at
    an estimate): it leaves the reply to the delivery still publishing it."""
    # A redelivery after 2 s; the window of a live delivery: min(0.75, 1.5) s, against
    # a token every 50 ms.
    quick = settings.model_copy(
        update={"ack_wait_seconds": 2.0, "heartbeat_seconds": 0.5, "retry_delay_seconds": 2.0}
    )
    await ensure_consumer(bus.js, quick)
    request = make_request()
    conv, reply = request.conversation_id, request.message_id
    await bus.publish(request)
    # The first delivery, taken by a worker that answers but whose heartbeats are lost.
    first = await bus.js.pull_subscribe_bind(topology.INFERENCE_CONSUMER, topology.WORK_STREAM)
    [delivery] = await first.fetch(1, timeout=5)
    subject = subjects.events(conv)
    start = StartEvent(message_id=reply, conversation_id=conv, model="demo", provider="demo")
    await bus.js.publish(subject, start.model_dump_json().encode())
    provider = ThreeTokens()
    await start_worker(quick, providers={"demo": provider})
    # Over two ack waits of tokens: the request is redelivered to the worker meanwhile.
    for i in range(90):
        token = TokenEvent(message_id=reply, content=f"t{i} ")
        await nc.publish(subject, token.model_dump_json().encode())
        await asyncio.sleep(0.05)
    # Still pending, delivered again (to the worker) and given back each time.
    work = await bus.js.consumer_info(topology.WORK_STREAM, topology.INFERENCE_CONSUMER)
    done = DoneEvent(
        message_id=reply, finish_reason="stop", usage=Usage.of(5, 90), model="demo", provider="demo"
    )
    await bus.js.publish(subject, done.model_dump_json().encode())
    await delivery.ack()
    await bus.wait_idle()

    assert provider.calls == 0
    events = await bus.events(request)
    assert not [e for e in events if isinstance(e, StatusEvent)]  # no "retrying"
    assert [e.type for e in events].count("done") == 1
    assert await bus.usage(request) == []  # the first's call is not billed at an estimate
    assert work.num_redelivered == 1 and work.num_ack_pending == 1
