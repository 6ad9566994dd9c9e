"""Feedback in memory's store (SQLite and PostgreSQL): one per user and answer, a PUT
replaces it, each change goes through the outbox to the feedback stream exactly once."""

from __future__ import annotations

import json

import nats
import pytest
from memory_testing import at, finished, user_message
from sqlalchemy.ext.asyncio import AsyncEngine

from contracts import rpc, subjects, topology
from contracts.events import FeedbackChanged
from contracts.settings import LivechatSettings
from memory import SqlConversationRepository
from memory.feedback.desk import FeedbackDesk
from memory.feedback.publisher import FeedbackPublisher
from memory.feedback.repository import SqlFeedbackRepository

pytestmark = pytest.mark.nats


def _set(
    message: str, rating: str, comment: str | None = None, user: str = "alice"
) -> rpc.FeedbackSetRequest:
    return rpc.FeedbackSetRequest(
        user_id=user,
        conversation_id="c1",
        message_id=message,
        rating=rating,
        comment=comment,  # type: ignore[arg-type]
    )


async def _history(
    desk: FeedbackDesk, store: SqlConversationRepository, user: str
) -> dict[str, object]:
    request = rpc.ConversationGetRequest(user_id=user, conversation_id="c1", with_feedback=True)
    reply = await desk.with_feedback(request, await store.get_conversation(request))
    return {m.id: m.feedback and (m.feedback.rating, m.feedback.comment) for m in reply.messages}


async def test_feedback_is_kept_replaced_removed_and_published_once(
    engine: AsyncEngine, repository: SqlConversationRepository, nats_url: str
) -> None:
    await repository.store_events(
        [
            user_message("c1", "q1", "Rivers?", seconds=0),
            finished("c1", "r1", "q1", "They run.", seconds=1),
            user_message("c1", "q2", "Lakes?", seconds=2),
            finished("c1", "r2", "q2", "They rest.", seconds=3),
        ]
    )
    feedback = SqlFeedbackRepository(engine)
    # Not attached to NATS yet: every publish fails, the outbox keeps the changes.
    publisher = FeedbackPublisher(feedback, timeout=2.0, interval_seconds=60.0)
    moments = iter(at(10 + i) for i in range(100))
    desk = FeedbackDesk(repository, feedback, publisher, lambda: next(moments))

    first = await desk.set(_set("r1", "up"))
    assert first.outcome == "stored" and first.feedback is not None
    assert (first.feedback.rating, first.feedback.comment) == ("up", None)
    again = await desk.set(_set("r1", "up"))  # a retried PUT: nothing changes
    assert again.feedback == first.feedback
    replaced = await desk.set(_set("r1", "down", "Too short."))
    assert replaced.feedback is not None and replaced.feedback.comment == "Too short."
    assert (await desk.set(_set("r2", "up"))).outcome == "stored"
    assert (await desk.set(_set("r2", "down", user="bob"))).outcome == "no_conversation"
    assert (await desk.set(_set("q1", "up"))).outcome == "not_assistant"
    assert (await desk.set(_set("nope", "up"))).outcome == "no_message"

    assert await _history(desk, repository, "alice") == {
        "q1": None,
        "r1": ("down", "Too short."),
        "q2": None,
        "r2": ("up", None),
    }
    # The export pages through the caller's feedback, oldest change first.
    page = await desk.export(rpc.FeedbackExportRequest(user_id="alice", limit=1))
    assert [e.message_id for e in page.entries] == ["r1"] and page.cursor is not None
    rest = await desk.export(rpc.FeedbackExportRequest(user_id="alice", after=page.cursor))
    assert [e.message_id for e in rest.entries] == ["r2"] and rest.cursor is None
    assert (await desk.export(rpc.FeedbackExportRequest(user_id="bob"))).entries == ()

    delete = rpc.FeedbackDeleteRequest(user_id="alice", conversation_id="c1", message_id="r2")
    assert (await desk.delete(delete)).outcome == "deleted"
    assert (await desk.delete(delete)).outcome == "deleted"  # idempotent: no new change
    assert (await _history(desk, repository, "alice"))["r2"] is None

    # NATS is back: the outbox is published in order, each change once, then emptied.
    client = await nats.connect(nats_url)
    try:
        js = client.jetstream()
        await topology.ensure_streams(js, LivechatSettings(), topology.MEMORY_STREAMS)
        publisher.attach(js)
        assert await publisher.republish() == 4
        assert await publisher.republish() == 0
        info = await js.stream_info(topology.FEEDBACK_STREAM)
        assert info.state.messages == 4
        sub = await js.subscribe(subjects.FEEDBACK_ALL, ordered_consumer=True)
        changes = [
            FeedbackChanged.model_validate(json.loads((await sub.next_msg(timeout=5)).data))
            for _ in range(4)
        ]
        assert [(c.message_id, c.rating, c.comment) for c in changes] == [
            ("r1", "up", None),
            ("r1", "down", "Too short."),
            ("r2", "up", None),
            ("r2", None, None),
        ]
        # A change published at once also leaves the outbox.
        assert (await desk.set(_set("r2", "down"))).outcome == "stored"
        assert await feedback.unpublished(10) == []
        assert (await js.stream_info(topology.FEEDBACK_STREAM)).state.messages == 5
    finally:
        await client.close()

    # Gone with the conversation.
    deleted = await repository.delete_conversation(
        rpc.ConversationDeleteRequest(user_id="alice", conversation_id="c1"), at(50)
    )
    assert deleted.deleted
    assert (await desk.export(rpc.FeedbackExportRequest(user_id="alice"))).entries == ()
