"""A request is generated a bounded number of times: one whose outcome can never be
stored ends with one `error` after the last attempt, each attempt billed once; a
request only waiting for memory is not counted."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from nats.js.api import DiscardPolicy

from contracts import ids, subjects, topology
from contracts.events import DoneEvent, ErrorEvent, Usage
from contracts.rpc import ContextReply
from inference import Completion, ProviderRequest

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
