"""Inference workers against a real nats-server, with a stand-in memory service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import nats
import pytest

from contracts import ids, subjects, topology
from contracts.events import (
    ContextMessage,
    DoneEvent,
    ErrorEvent,
    GenerationOptions,
    ResyncEvent,
    StartEvent,
    StatusEvent,
    TokenEvent,
    Usage,
)
from contracts.rpc import (
    ContextReply,
    ContextRequest,
    ConversationGetReply,
    ConversationGetRequest,
    ReplyError,
    StoredMessage,
)
from inference import Completion, DemoProvider, ProviderError, ProviderRequest
from inference.clock import InstantClock
from inference.providers.demo import demo_answer
from memory import MemorySettings
from memory import create_app as create_memory


def kinds(events: list[Any]) -> list[str]:
    return [e.type if not isinstance(e, StatusEvent) else f"status:{e.state}" for e in events]


def joined(events: list[Any]) -> str:
    return "".join(e.content for e in events if isinstance(e, TokenEvent))


async def test_a_request_streams_start_tokens_done_and_is_stored_and_accounted(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    # One token event per provider token: the usage is checked against their count.
    settings = settings.model_copy(update={"token_coalesce_ms": 0})
    memory.default = ContextReply(
        system_prompt="Answer briefly.",
        messages=(
            ContextMessage(role="user", content="Hello"),
            ContextMessage(role="assistant", content="Hi! How can I help?"),
        ),
    )
    await start_worker(settings)
    request = make_request("How do I size a PostgreSQL connection pool?")
    await bus.publish(request)
    await bus.wait_ended(request)

    events = await bus.events(request)
    names = kinds(events)
    assert names[:2] == ["start", "status:generating"]
    assert names[-1] == "done" and names.count("done") == 1 and "error" not in names
    assert set(names[2:-1]) == {"token"}
    start, done = events[0], events[-1]
    assert isinstance(start, StartEvent) and isinstance(done, DoneEvent)
    assert (start.model, start.provider) == ("auto", "demo")
    assert start.conversation_id == request.conversation_id
    assert done.finish_reason == "stop"
    assert joined(events) == "".join(demo_answer(request.content, settings.demo_max_tokens))

    [finished] = await bus.finished(request)
    assert finished.content == joined(events)
    assert finished.status == "complete" and finished.reply_to == request.user_message_id
    assert finished.created_at >= request.requested_at
    assert finished.usage == done.usage
    [usage] = await bus.usage(request)
    assert usage.outcome == "completed"
    assert usage.attempt_id == ids.attempt_id(request.message_id, 1, 0)
    assert usage.usage.completion_tokens == len([e for e in events if e.type == "token"])
    assert (usage.model, usage.provider, usage.provider_model) == ("auto", "demo", "demo")

    [asked] = memory.asked
    assert asked.reply_id == request.message_id and asked.limit == settings.context_messages
    await bus.wait_idle()


async def test_max_tokens_ends_with_length(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    # One token event per provider token: they are counted.
    await start_worker(settings.model_copy(update={"token_coalesce_ms": 0}))
    request = make_request(options=GenerationOptions(model="demo", max_tokens=5))
    await bus.publish(request)
    await bus.wait_ended(request)
    events = await bus.events(request)
    assert len([e for e in events if isinstance(e, TokenEvent)]) == 5
    assert events[-1].finish_reason == "length"
    [finished] = await bus.finished(request)
    assert finished.finish_reason == "length" and finished.content == joined(events)


UNAVAILABLE = ReplyError(
    code="provider_unavailable", message="The model provider is unavailable.", retryable=True
)


@pytest.mark.parametrize(
    ("status", "finish_reason", "error"),
    [
        # Stored before memory kept how replies ended: told from the status.
        ("complete", None, None),
        ("cancelled", None, None),
        ("failed", None, None),
        ("interrupted", None, None),
        # As memory keeps them now.
        ("complete", "length", None),
        ("complete", "content_filter", None),
        ("cancelled", "cancelled", None),
        ("failed", None, UNAVAILABLE),
    ],
)
async def test_a_reply_memory_already_holds_is_not_generated_again_but_ends_again(
    status: Any,
    finish_reason: Any,
    error: ReplyError | None,
    memory: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    nc: Any,
) -> None:
    """A redelivered request already answered: a client still waiting gets its end,
    after its stored text when the events lack it (here all of them)."""
    request = make_request()
    stored_usage = Usage.of(12, 3)
    memory.replies[request.message_id] = ContextReply(
        existing_reply=StoredMessage(
            id=request.message_id,
            role="assistant",
            content="Already answered.",
            status=status,
            created_at=request.requested_at,
            model="groq-llama-70b",
            provider="groq",
            usage=stored_usage,
            finish_reason=finish_reason,
            error=error,
        )
    )
    fresh = make_request("Something else")
    await start_worker()
    await bus.publish(request)
    await bus.publish(fresh)
    await bus.wait_ended(fresh)
    await bus.wait_idle()
    [resync, end] = await bus.events(request)
    assert resync == ResyncEvent(message_id=request.message_id, content="Already answered.")
    if error is not None:
        # The error it first ended with, not a generic one.
        assert isinstance(end, ErrorEvent)
        assert (end.code, end.message, end.retryable) == (
            error.code,
            error.message,
            error.retryable,
        )
    elif status == "failed":
        assert isinstance(end, ErrorEvent) and not end.retryable
        assert end.code == "generation_failed"
    elif status == "interrupted":
        # Cut short for good: an error the user may act on by sending again.
        assert isinstance(end, ErrorEvent) and end.retryable
        assert end.code == "generation_interrupted"
    else:
        assert isinstance(end, DoneEvent)
        expected = finish_reason or ("cancelled" if status == "cancelled" else "stop")
        assert end.finish_reason == expected
        assert (end.usage, end.model, end.provider) == (stored_usage, "groq-llama-70b", "groq")
    # The same Nats-Msg-Id as a first end: another delivery within the dedupe window
    # adds nothing.
    again = request.model_dump_json().encode()
    await bus.js.publish(subjects.GENERATE, again, headers={"Nats-Msg-Id": "again"})
    await bus.wait_idle()
    assert len(await bus.events(request)) == 2
    assert await bus.finished(request) == []
    assert await bus.failed(request) == []
    assert await bus.usage(request) == []
    assert {a.reply_id for a in memory.asked} == {request.message_id, fresh.message_id}


@pytest.mark.parametrize("first_end", ["done", "error"])
async def test_a_stored_reply_whose_end_is_still_in_the_stream_gets_no_second_end(
    first_end: str, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    """Past the dedupe window a repeat is not deduplicated by NATS: the stream is read."""
    request = make_request()
    stored_usage = Usage.of(12, 3)
    memory.replies[request.message_id] = ContextReply(
        existing_reply=StoredMessage(
            id=request.message_id,
            role="assistant",
            content="Already answered.",
            status="complete" if first_end == "done" else "failed",
            created_at=request.requested_at,
            model="groq-llama-70b",
            provider="groq",
            usage=stored_usage,
        )
    )
    # The first delivery's end, long ago: its Nats-Msg-Id is no longer remembered.
    end: DoneEvent | ErrorEvent
    if first_end == "done":
        end = DoneEvent(
            message_id=request.message_id,
            finish_reason="length",
            usage=stored_usage,
            model="groq-llama-70b",
            provider="groq",
        )
    else:
        end = ErrorEvent(
            message_id=request.message_id,
            code="rate_limited",
            message="The assistant is busy, try again in 3 s.",
            retryable=True,
        )
    await bus.js.publish(
        subjects.events(request.conversation_id),
        end.model_dump_json().encode(),
        stream=topology.EVENTS_STREAM,
    )
    fresh = make_request("Something else")
    await start_worker()
    await bus.publish(request)
    await bus.publish(fresh)
    await bus.wait_ended(fresh)
    await bus.wait_idle()
    assert await bus.events(request) == [end]
    assert {a.reply_id for a in memory.asked} == {request.message_id, fresh.message_id}


@pytest.fixture
async def real_memory(nats_url: str, tmp_path: Path, nc: Any, poll: Any) -> AsyncIterator[None]:
    """The memory service itself (SQLite), instead of the stand-in."""
    app = create_memory(
        MemorySettings(
            nats_url=nats_url,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}",
            data_dir=tmp_path / "memory",
            memory_ack_wait_seconds=2.0,
        )
    )
    await app.start()
    try:

        async def answering() -> bool:
            try:
                await nc.request(subjects.ping("memory"), b"", timeout=1)
            except nats.errors.Error:
                return False
            return True

        await poll(answering)
        yield
    finally:
        await app.stop()


@pytest.mark.parametrize("ending", ["length", "provider_unavailable"])
async def test_a_reply_whose_events_aged_out_ends_again_as_it_first_ended(
    ending: str,
    settings: Any,
    real_memory: None,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    nc: Any,
    poll: Any,
) -> None:
    """Redelivered past the dedupe window, its events gone: the end memory kept is
    published again, the same finish reason or the same error."""
    if ending == "length":
        await start_worker()
        request = make_request(options=GenerationOptions(model="demo", max_tokens=5))
    else:
        await start_worker(providers={"demo": BreaksAfter(3)})
        request = make_request()
    await bus.publish(request)
    await bus.wait_ended(request)
    first_end = (await bus.events(request))[-1]
    if ending == "length":
        assert isinstance(first_end, DoneEvent) and first_end.finish_reason == "length"
    else:
        assert isinstance(first_end, ErrorEvent) and first_end.code == "provider_unavailable"

    async def stored() -> bool:
        ask = ConversationGetRequest(
            user_id=request.user_id,
            conversation_id=request.conversation_id,
            message_ids=(request.message_id,),
        )
        answer = await nc.request(
            subjects.MEMORY_CONVERSATION_GET, ask.model_dump_json().encode(), timeout=5
        )
        return bool(ConversationGetReply.model_validate_json(answer.data).messages)

    await poll(stored)
    await bus.wait_idle()
    # The reply's events age out of the stream, and out of its dedupe window (a purge
    # keeps that): a stream made anew holds neither. The request comes again.
    await bus.js.delete_stream(topology.EVENTS_STREAM)
    await topology.ensure_streams(bus.js, settings)
    again = request.model_dump_json().encode()
    await bus.js.publish(subjects.GENERATE, again, headers={"Nats-Msg-Id": "again"})
    await bus.wait_ended(request)
    await bus.wait_idle()

    assert await bus.events(request) == [first_end]
    # Ended again, not generated again.
    assert len(await bus.finished(request)) + len(await bus.failed(request)) == 1
    assert len(await bus.usage(request)) == 1


@pytest.mark.parametrize("memory_away_first", [False, True])
async def test_a_reply_stored_before_its_usage_was_reported_is_billed_on_redelivery(
    memory_away_first: bool,
    settings: Any,
    nc: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    poll: Any,
) -> None:
    """Its worker gone between storing the answer and reporting the call (here: the
    usage stream is away, that publish fails): the next delivery finds the answer
    stored, ends it as it was, and bills its call, once, under the call's own attempt
    id (that of the delivery that made it, when an earlier one waited for memory)."""
    held: dict[str, ContextReply] = {}

    async def memory(msg: Any) -> None:
        ask = ContextRequest.model_validate_json(msg.data)
        await msg.respond(held.get(ask.reply_id, ContextReply()).model_dump_json().encode())

    request = make_request()
    await start_worker()
    await bus.js.delete_stream(topology.USAGE_STREAM)
    if not memory_away_first:
        await nc.subscribe(subjects.MEMORY_CONTEXT, cb=memory)
    await bus.publish(request)
    if memory_away_first:

        async def retried() -> bool:
            info = await bus.js.consumer_info(topology.WORK_STREAM, topology.INFERENCE_CONSUMER)
            return bool(info.num_redelivered)

        await poll(retried)
        await nc.subscribe(subjects.MEMORY_CONTEXT, cb=memory)

    async def stored() -> bool:
        return bool(await bus.finished(request))

    await poll(stored)
    [finished] = await bus.finished(request)
    # Memory holds it, as the memory service does once it stored the record.
    held[request.message_id] = ContextReply(
        existing_reply=StoredMessage(
            id=request.message_id,
            role="assistant",
            content=finished.content,
            status=finished.status,
            created_at=finished.created_at,
            model=finished.model,
            provider=finished.provider,
            usage=finished.usage,
            finish_reason=finished.finish_reason,
        )
    )
    await topology.ensure_streams(bus.js, settings)
    await bus.wait_ended(request)
    await bus.wait_idle()

    events = await bus.events(request)
    assert kinds(events).count("start") == 1
    [done] = [e for e in events if isinstance(e, DoneEvent)]
    [report] = await bus.usage(request)
    # The delivery that streamed it (a later one when memory was away first).
    [generating] = [e for e in events if isinstance(e, StatusEvent) and e.state == "generating"]
    delivery = generating.attempt or 1
    assert (delivery > 1) == memory_away_first
    assert report.attempt_id == ids.attempt_id(request.message_id, delivery, 0)
    assert (report.outcome, report.provider) == ("completed", finished.provider)
    # Billed what the answer shows; its provider's own count is not stored: an estimate.
    assert report.usage == done.usage == finished.usage
    assert report.estimated
    assert joined(events) == finished.content


async def test_a_reply_failed_before_its_usage_was_reported_is_billed_on_redelivery(
    settings: Any, nc: Any, bus: Any, make_request: Any, start_worker: Any, poll: Any
) -> None:
    """As above, for a reply whose provider failed mid-answer: the next delivery finds the
    failure stored, ends it with its error, and bills the failed call once, estimated."""
    held: dict[str, ContextReply] = {}

    async def memory(msg: Any) -> None:
        ask = ContextRequest.model_validate_json(msg.data)
        await msg.respond(held.get(ask.reply_id, ContextReply()).model_dump_json().encode())

    request = make_request()
    await start_worker(providers={"demo": BreaksAfter(3)})
    await bus.js.delete_stream(topology.USAGE_STREAM)
    await nc.subscribe(subjects.MEMORY_CONTEXT, cb=memory)
    await bus.publish(request)

    async def stored() -> bool:
        return bool(await bus.failed(request))

    await poll(stored)
    [failed] = await bus.failed(request)
    held[request.message_id] = ContextReply(
        existing_reply=StoredMessage(
            id=request.message_id,
            role="assistant",
            content=failed.content,
            status="failed",
            created_at=failed.created_at,
            model=failed.model,
            provider=failed.provider,
            error=ReplyError(code=failed.code, message=failed.message, retryable=failed.retryable),
        )
    )
    await topology.ensure_streams(bus.js, settings)
    await bus.wait_ended(request)
    await bus.wait_idle()

    events = await bus.events(request)
    assert kinds(events).count("start") == 1 and kinds(events).count("error") == 1
    assert "done" not in kinds(events)
    [error] = [e for e in events if isinstance(e, ErrorEvent)]
    assert error.code == failed.code == "provider_unavailable"
    assert joined(events) == failed.content == "part0 part1 part2 "
    [report] = await bus.usage(request)
    assert report.attempt_id == ids.attempt_id(request.message_id, 1, 0)
    assert (report.outcome, report.provider, report.estimated) == ("failed", "demo", True)
    assert report.usage.completion_tokens == 3 and report.usage.prompt_tokens > 0


async def test_a_stateless_request_uses_its_history_and_is_not_stored(
    memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    request = make_request(
        "And in French?",
        history=(ContextMessage(role="user", content="Say hello"),),
        persist=False,
    )
    await start_worker()
    await bus.publish(request)
    await bus.wait_ended(request)
    assert kinds(await bus.events(request))[-1] == "done"
    assert await bus.finished(request) == []
    [usage] = await bus.usage(request)
    assert usage.outcome == "completed"
    assert memory.asked == []


async def test_an_unknown_model_gets_one_error_and_no_usage(
    memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    request = make_request(options=GenerationOptions(model="gpt-nonexistent"))
    await start_worker()
    await bus.publish(request)
    await bus.wait_ended(request)
    [error] = await bus.events(request)
    assert isinstance(error, ErrorEvent)
    assert error.code == "unknown_model" and not error.retryable
    [failed] = await bus.failed(request)
    assert failed.code == "unknown_model"
    assert await bus.usage(request) == []


class BreaksAfter:
    """A provider that streams a few tokens, then fails like a dropped connection."""

    name = "demo"

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        for i in range(self.tokens):
            yield f"part{i} "
        raise ProviderError("The model provider is unavailable.", code="provider_unavailable")


async def test_a_provider_error_ends_with_failed_usage_and_one_error(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    # One token event per provider token: the events are checked one by one.
    per_token = settings.model_copy(update={"token_coalesce_ms": 0})
    await start_worker(per_token, providers={"demo": BreaksAfter(3)})
    request = make_request()
    await bus.publish(request)
    await bus.wait_ended(request)
    events = await bus.events(request)
    assert kinds(events) == ["start", "status:generating", "token", "token", "token", "error"]
    error = events[-1]
    assert error.code == "provider_unavailable" and error.retryable
    assert "Traceback" not in error.message
    [failed] = await bus.failed(request)
    assert failed.content == "part0 part1 part2 "
    [usage] = await bus.usage(request)
    assert usage.outcome == "failed" and usage.estimated
    assert usage.usage.completion_tokens == 3
    await bus.wait_idle()


class Counting:
    """Counts the generations one worker ran."""

    name = "demo"

    def __init__(self, inner: DemoProvider) -> None:
        self.inner = inner
        self.calls = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        self.calls += 1
        async for item in self.inner.stream(request):
            yield item


async def test_two_workers_share_the_work_and_answer_each_request_once(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    # Real pacing, so that one worker cannot drain the queue alone.
    pace = {"ttft_seconds": 0.02, "tokens_per_second": 400, "answer_tokens": 20}
    narrow = settings.model_copy(update={"max_concurrency": 2})
    counters = [Counting(DemoProvider(**pace)) for _ in range(2)]  # type: ignore[arg-type]
    for counter in counters:
        await start_worker(narrow, providers={"demo": counter})
    requests = [make_request(f"Question number {i}", conversation_id=f"c{i}") for i in range(12)]
    for request in requests:
        await bus.publish(request)
    await bus.wait_ended(*requests, within=60)

    assert all(c.calls > 0 for c in counters), [c.calls for c in counters]
    assert sum(c.calls for c in counters) == len(requests)
    for request in requests:
        events = await bus.events(request)
        assert kinds(events).count("start") == 1 and kinds(events).count("done") == 1
        assert len(await bus.finished(request)) == 1
        assert len(await bus.usage(request)) == 1
    await bus.wait_idle()


async def test_a_request_waits_for_memory_instead_of_answering_without_context(
    nc: Any, bus: Any, make_request: Any, start_worker: Any, poll: Any
) -> None:
    answered: list[bool] = []

    async def late_memory(msg: Any) -> None:
        answered.append(True)
        await msg.respond(ContextReply().model_dump_json().encode())

    await start_worker(clock=InstantClock())
    request = make_request()
    await bus.publish(request)

    # No memory yet: the request is tried again later, and nothing is streamed meanwhile.
    async def retried() -> bool:
        info = await bus.js.consumer_info(topology.WORK_STREAM, topology.INFERENCE_CONSUMER)
        return bool(info.num_redelivered)

    await poll(retried)
    assert await bus.events(request) == []
    await nc.subscribe(subjects.MEMORY_CONTEXT, cb=late_memory)
    await bus.wait_ended(request)
    assert answered
    assert kinds(await bus.events(request))[-1] == "done"
    assert len(await bus.finished(request)) == 1


async def test_an_invalid_work_request_is_terminated_and_does_not_block_the_next(
    memory: Any, bus: Any, make_request: Any, start_worker: Any
) -> None:
    await bus.js.publish(subjects.GENERATE, b'{"kind": "generation_requested", "oops": 1}')
    await bus.js.publish(subjects.GENERATE, b"not json at all")
    await start_worker()
    request = make_request("After the garbage")
    await bus.publish(request)
    await bus.wait_ended(request)
    # Terminated, not left for redelivery: nothing pending, nothing in flight.
    await bus.wait_idle()
    assert [e.type for e in await bus.events(request)][-1] == "done"


class HearsAnElection:
    """A provider in the middle of whose first answer the events stream elects a leader
    (JetStream's advisory, as a three-node cluster sends it when the node leading the
    stream dies: the token events published before it may have been dropped)."""

    name = "demo"

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.answers = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        self.answers += 1
        yield "part0 "
        if self.answers == 1:
            await self.nc.publish(topology.EVENTS_LEADER_ELECTED, b"{}")
            await self.nc.flush()
        yield "part1 "
        yield Completion(usage=Usage.of(7, 2), finish_reason="stop")


async def test_a_leader_election_of_the_events_stream_mid_answer_ends_with_a_resync(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any, nc: Any
) -> None:
    await start_worker(providers={"demo": HearsAnElection(nc)})
    request = make_request()
    await bus.publish(request)
    await bus.wait_ended(request)
    events = await bus.events(request)
    # The whole text, right before the end: what a client joined is replaced by it.
    assert kinds(events)[-2:] == ["resync", "done"]
    [finished] = await bus.finished(request)
    assert events[-2].content == finished.content == "part0 part1 "
    # An election before a reply began does not concern it.
    later = make_request("And then?")
    await bus.publish(later)
    await bus.wait_ended(later)
    assert "resync" not in kinds(await bus.events(later))
    await bus.wait_idle()


def shown(events: list[Any]) -> str:
    """The reply's text as a client builds it: its tokens joined, a `resync` replacing
    what came before it."""
    text = ""
    for event in events:
        if isinstance(event, TokenEvent):
            text += event.content
        elif isinstance(event, ResyncEvent):
            text = event.content
    return text


class LosesATokenEvent:
    """A provider in the middle of whose first answer the events stream drops a token
    event without a word, as a cluster's does while the node leading it is lost and the
    others elect another, but the worker hears no advisory and does not reconnect: the
    stream stops taking the conversation's subject until that event has gone by (`passing`,
    a subscriber of the test, sees it go by), then takes it again."""

    name = "demo"

    def __init__(self, nc: Any, passing: Any) -> None:
        self.nc = nc
        self.passing = passing
        self.answers = 0

    async def stream(self, request: ProviderRequest) -> AsyncIterator[str | Completion]:
        self.answers += 1
        if self.answers > 1:  # only the first answer loses one
            yield "part0 part1 part2 "
            yield Completion(usage=Usage.of(7, 3), finish_reason="stop")
            return
        js = self.nc.jetstream()
        config = (await js.stream_info(topology.EVENTS_STREAM)).config
        yield "part0 "
        await self.gone_by("part0")  # stored: it went by before the stream stopped taking it
        elsewhere = [f"{subjects.PREFIX}.events.elsewhere"]
        await js.update_stream(replace(config, subjects=elsewhere))
        yield "part1 "
        await self.gone_by("part1")  # dropped: it came after
        await js.update_stream(config)
        yield "part2 "
        yield Completion(usage=Usage.of(7, 3), finish_reason="stop")

    async def gone_by(self, content: str) -> None:
        while content.encode() not in (await self.passing.next_msg(timeout=10)).data:
            pass


async def test_a_token_event_the_stream_dropped_unheard_of_ends_with_a_resync(
    settings: Any, memory: Any, bus: Any, make_request: Any, start_worker: Any, nc: Any
) -> None:
    request = make_request()
    passing = await nc.subscribe(subjects.events(request.conversation_id))
    await nc.flush()
    provider = LosesATokenEvent(nc, passing)
    await start_worker(
        settings.model_copy(update={"token_coalesce_ms": 0}), providers={"demo": provider}
    )
    await bus.publish(request)
    await bus.wait_ended(request)
    events = await bus.events(request)
    [finished] = await bus.finished(request)
    assert finished.content == "part0 part1 part2 "
    # The stream lacks a token event: the client is given the whole text before the end.
    assert "".join(e.content for e in events if isinstance(e, TokenEvent)) == "part0 part2 "
    assert kinds(events)[-2:] == ["resync", "done"]
    assert shown(events) == finished.content
    # A reply the stream holds whole gets no resync.
    later = make_request("And then?")
    await bus.publish(later)
    await bus.wait_ended(later)
    assert "resync" not in kinds(await bus.events(later))
    await bus.wait_idle()
