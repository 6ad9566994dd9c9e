"""The worker's handlers in memory, with FastStream's TestNatsBroker."""

from __future__ import annotations

from typing import Any
from unittest.mock import Mock

from faststream.nats import NatsBroker, TestNatsBroker

from contracts import subjects, topology
from contracts.events import (
    ConversationEvent,
    GenerationFinished,
    ResyncEvent,
    UsageReported,
)
from contracts.rpc import ContextReply, ContextRequest, Pong
from inference import InferenceSettings, create_router
from inference.clock import InstantClock
from inference.providers.demo import demo_answer


async def test_handler_streams_then_stores_accounts_and_ends(make_request: Any, poll: Any) -> None:
    settings = InferenceSettings(demo_max_tokens=12)
    broker = NatsBroker()
    # Streams on the test subscribers: TestNatsBroker routes a stream publish only to them.
    broker.include_router(create_router(settings, clock=InstantClock()))
    events: list[ConversationEvent] = []
    finished: list[GenerationFinished] = []
    usage: list[UsageReported] = []
    asked: list[ContextRequest] = []

    @broker.subscriber(subjects.MEMORY_CONTEXT)
    async def memory(request: ContextRequest) -> ContextReply:
        asked.append(request)
        return ContextReply(system_prompt="Be brief.")

    @broker.subscriber(subjects.EVENTS_ALL, stream=topology.EVENTS_STREAM)
    async def on_event(event: ConversationEvent) -> None:
        events.append(event)

    @broker.subscriber(subjects.chat_finished_pattern(), stream=topology.CHAT_STREAM)
    async def on_finished(event: GenerationFinished) -> None:
        finished.append(event)

    @broker.subscriber(subjects.USAGE_REPORTED_ALL, stream=topology.USAGE_STREAM)
    async def on_usage(event: UsageReported) -> None:
        usage.append(event)

    request = make_request("Tell me about TestNatsBroker")
    async with TestNatsBroker(broker) as br:
        # The in-memory connection (a mock) gives the inbox the stream's acks would come to.
        broker.connection.new_inbox = Mock(return_value="_INBOX.handler")
        await br.publish(request, subjects.GENERATE, stream=topology.WORK_STREAM)

        # The handler only admits the request; its generation runs on in a task.
        async def ended() -> bool:
            return bool(events) and events[-1].type == "done"

        await poll(ended)
        pong = await br.request(None, subjects.ping("inference"))

    # Start, status and tokens go out as raw core publishes on the connection, which the
    # in-memory broker does not route (the real-server tests read them from the stream):
    # no stream acks them, so the whole text comes before the end.
    assert [e.type for e in events] == ["resync", "done"]
    tokens = demo_answer(request.content, 12)
    [stored] = finished
    assert stored.content == "".join(tokens) and stored.message_id == request.message_id
    assert isinstance(events[0], ResyncEvent) and events[0].content == stored.content
    [reported] = usage
    assert reported.outcome == "completed" and reported.usage.completion_tokens == len(tokens)
    assert [a.user_message_id for a in asked] == [request.user_message_id]
    assert Pong.model_validate_json(pong.body) == Pong(service="inference")
