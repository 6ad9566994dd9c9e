"""A request is generated a bounded number of times: one whose outcome can never be
stored ends with one `error` after the last attempt, each attempt billed once; a
request only waiting for memory is not counted. A redelivery shows what every
delivery billed, and leaves a reply to an earlier delivery still answering it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from nats.js.api import DiscardPolicy

from contracts import ids, subjects, topology
from contracts.events import (
    DoneEvent,
    ErrorEvent,
    GenerationRequested,
    StartEvent,
    StatusEvent,
    TokenEvent,
    Usage,
    UsageReported,
)
from contracts.rpc import ContextReply
from inference import Completion, ProviderRequest
from inference.clock import InstantClock
from inference.outbox import BILLED_HEADER
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


class SkewedClock(InstantClock):
    """A worker's wall clock `skew` seconds off the NATS server's."""

    def __init__(self, skew: float) -> None:
        self._skew = timedelta(seconds=skew)

    def now(self) -> datetime:
        return datetime.now(UTC) + self._skew


@pytest.mark.parametrize("skew", [0.0, 10.0, -10.0])
async def test_a_redelivery_leaves_the_reply_to_its_delivery_still_publishing(
    skew: float,
    settings: Any,
    nc: Any,
    bus: Any,
    memory: Any,
    make_request: Any,
    start_worker: Any,
) -> None:
    """A worker cut from NATS past its ack wait (its node lost, say) goes on answering,
    and the request comes again to another worker meanwhile. That one must not answer
    it a second time beside the first (tokens interleaved, the first's call billed at
    an estimate): it leaves the reply to the delivery still publishing it. Whatever
    its own clock says: the age of the reply's last event is the server's."""
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
    await start_worker(quick, providers={"demo": provider}, clock=SkewedClock(skew))
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


@pytest.mark.parametrize("skew", [10.0, -10.0])
async def test_a_redelivery_takes_over_a_dead_delivery_whatever_its_clock(
    skew: float,
    settings: Any,
    bus: Any,
    memory: Any,
    make_request: Any,
    start_worker: Any,
) -> None:
    """The earlier delivery went quiet for good (its worker died): a worker whose clock
    is off the server's takes the reply over once its last event is old, and finishes it
    after the tokens already out, its cut call billed once."""
    request = make_request()
    delivery = await _first_delivery(bus, settings, request)
    await _publish_start_and_tokens(bus, request, 2)
    await delivery.nak()  # the worker died: its request comes again
    provider = ThreeTokens()
    await start_worker(providers={"demo": provider}, clock=SkewedClock(skew))
    await bus.wait_ended(request)
    await bus.wait_idle()

    assert provider.calls == 1
    events = await bus.events(request)
    assert [e.type for e in events].count("done") == 1
    assert "".join(e.content for e in events if isinstance(e, TokenEvent)) == "t0 t1 w0 w1 w2 "
    reports = await bus.usage(request)
    assert ids.attempt_id(request.message_id, 1, 0) in {r.attempt_id for r in reports}
    assert len(reports) == 2


@pytest.mark.parametrize("carried", ["reported only", "with its bill", "before an upgrade"])
async def test_a_redelivery_shows_every_call_an_earlier_delivery_billed_once(
    carried: str,
    settings: Any,
    bus: Any,
    memory: Any,
    make_request: Any,
    start_worker: Any,
) -> None:
    """The first delivery's call failed after two tokens and was billed (its report
    stored), then the delivery handed the request over. The status event that carries
    the bill on (`provider_switched`) may not be stored (the events stream had no
    leader: "reported only"). The next delivery's `done` and stored usage show what the
    ledger bills for the reply: the sum of its reports, that call counted once."""
    request = make_request()
    delivery = await _first_delivery(bus, settings, request)
    await _publish_start_and_tokens(bus, request, 2)
    failed = UsageReported(
        attempt_id=ids.attempt_id(request.message_id, 1, 0),
        message_id=request.message_id,
        conversation_id=request.conversation_id,
        user_id=request.user_id,
        model="demo",
        provider="demo",
        provider_model="demo",
        usage=Usage.of(400, 2),
        outcome="failed",
        duration_ms=5.0,
        occurred_at=datetime.now(UTC),
    )
    # Where, and under the msg id with which, the worker reports it (a worker of before
    # an upgrade: on the one subject of all reports).
    subject = subjects.usage_reported(request.conversation_id, request.message_id)
    if carried == "before an upgrade":
        subject = subjects.USAGE_REPORTED
    await bus.js.publish(
        subject,
        failed.model_dump_json().encode(),
        headers={"Nats-Msg-Id": ids.msg_id("usage", failed.attempt_id)},
    )
    if carried != "reported only":
        switched = StatusEvent(
            message_id=request.message_id, state="provider_switched", provider="demo"
        )
        await bus.js.publish(
            subjects.events(request.conversation_id),
            switched.model_dump_json().encode(),
            headers={BILLED_HEADER: "400 2"},
        )
    await delivery.nak()
    provider = ThreeTokens()
    await start_worker(providers={"demo": provider})
    await bus.wait_ended(request)
    await bus.wait_idle()

    assert provider.calls == 1
    reports = await bus.usage(request)
    if carried == "before an upgrade":
        reports.append(failed)
    # The failed call, once (not again at an estimate), and the call that answered.
    assert sorted(r.attempt_id for r in reports).count(failed.attempt_id) == 1
    assert len(reports) == 2
    billed = Usage.of(
        sum(r.usage.prompt_tokens for r in reports),
        sum(r.usage.completion_tokens for r in reports),
    )
    assert billed == Usage.of(407, 5)
    [done] = [e for e in await bus.events(request) if isinstance(e, DoneEvent)]
    [finished] = await bus.finished(request)
    assert done.usage == finished.usage == billed


async def _first_delivery(bus: Any, settings: Any, request: GenerationRequested) -> Any:
    """The request's first delivery, taken as a worker would (by the test)."""
    await ensure_consumer(bus.js, settings)
    await bus.publish(request)
    first = await bus.js.pull_subscribe_bind(topology.INFERENCE_CONSUMER, topology.WORK_STREAM)
    [delivery] = await first.fetch(1, timeout=5)
    return delivery


async def _publish_start_and_tokens(bus: Any, request: GenerationRequested, count: int) -> None:
    """What a first delivery streamed before it went: its start and `count` tokens."""
    conv, reply = request.conversation_id, request.message_id
    subject = subjects.events(conv)
    start = StartEvent(message_id=reply, conversation_id=conv, model="demo", provider="demo")
    await bus.js.publish(subject, start.model_dump_json().encode())
    for i in range(count):
        token = TokenEvent(message_id=reply, content=f"t{i} ")
        await bus.js.publish(subject, token.model_dump_json().encode())
