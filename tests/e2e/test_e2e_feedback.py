"""Feedback on answers through the public API of the whole system (auth on): set,
replace, remove, shown in history to its author only, refused on what is not an answer,
exported as CSV, and each change replayable from the feedback stream once."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import nats
import pytest
from apiclients import bearer
from stacks import FAST_ENV, running_stack

from contracts import subjects, topology
from contracts.events import FeedbackChanged
from devstack.runner import DevStack

pytestmark = pytest.mark.nats

SECRET = "feedback-test-secret-0123456789abcdef"


ALICE, BOB = bearer(SECRET, "alice"), bearer(SECRET, "bob")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    env = {**FAST_ENV, "LIVECHAT_JWT_SECRET": SECRET}
    with running_stack(tmp_path_factory.mktemp("feedback"), env) as running:
        yield running


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


async def _messages(http: httpx.AsyncClient, conversation: str) -> dict[str, dict[str, Any]]:
    response = await http.get(f"/v1/conversations/{conversation}", headers=ALICE)
    assert response.status_code == 200, response.text
    return {m["role"]: m for m in response.json()["messages"]}


async def _stored(http: httpx.AsyncClient, conversation: str) -> dict[str, dict[str, Any]]:
    """The messages once memory holds the answer (it stores it just after the reply)."""
    for _ in range(600):
        shown = await _messages(http, conversation)
        if shown.get("assistant", {}).get("status") == "complete":
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"{conversation} never held its answer")


async def _export(http: httpx.AsyncClient, headers: dict[str, str]) -> list[dict[str, str]]:
    response = await http.get("/v1/feedback/export", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == [
        "conversation_id",
        "message_id",
        "user_id",
        "rating",
        "comment",
        "updated_at",
    ]
    return list(reader)


async def test_feedback_is_set_replaced_shown_exported_removed_and_replayable(
    stack: DevStack,
) -> None:
    conversation = f"fb-{uuid.uuid4().hex[:10]}"
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        sent = await http.post(
            f"/v1/conversations/{conversation}/messages",
            json={"content": "Tell me about rivers"},
            headers=ALICE,
        )
        assert sent.status_code == 200, sent.text
        answer = sent.json()["message"]["id"]
        question = (await _stored(http, conversation))["user"]["id"]
        url = f"/v1/conversations/{conversation}/messages/{answer}/feedback"

        up = await http.put(url, json={"rating": "up"}, headers=ALICE)
        assert up.status_code == 200, up.text
        assert up.json()["rating"] == "up" and "comment" not in up.json()
        assert (up.json()["conversation_id"], up.json()["message_id"]) == (conversation, answer)
        comment = "Too short, but — right. ✓"
        down = await http.put(url, json={"rating": "down", "comment": comment}, headers=ALICE)
        assert down.status_code == 200, down.text
        assert (down.json()["rating"], down.json()["comment"]) == ("down", comment)

        # Bad inputs: a clear error each, and nothing changes.
        for body in ({"rating": "meh"}, {"rating": "up", "comment": "x" * 2001}, {}):
            _error(await http.put(url, json=body, headers=ALICE), 422, "validation_error")
        _error(
            await http.put(url, json={"rating": "up", "mood": "happy"}, headers=ALICE),
            422,
            "validation_error",
        )
        not_json = await http.put(url, content=b'{"rating": "up"}', headers=ALICE)
        _error(not_json, 415, "unsupported_media_type")
        on_question = url.replace(answer, question)
        _error(
            await http.put(on_question, json={"rating": "up"}, headers=ALICE), 422, "not_an_answer"
        )
        unknown = url.replace(answer, "no-such-message")
        _error(await http.put(unknown, json={"rating": "up"}, headers=ALICE), 404, "not_found")
        _error(await http.delete(unknown, headers=ALICE), 404, "not_found")
        # Another user's conversation: 404, as on every route.
        _error(await http.put(url, json={"rating": "up"}, headers=BOB), 404, "not_found")
        _error(await http.delete(url, headers=BOB), 404, "not_found")

        shown = await _messages(http, conversation)
        assert shown["assistant"]["feedback"]["rating"] == "down"
        assert shown["assistant"]["feedback"]["comment"] == comment
        assert "feedback" not in shown["user"]

        rows = [r for r in await _export(http, ALICE) if r["conversation_id"] == conversation]
        assert [(r["message_id"], r["user_id"], r["rating"], r["comment"]) for r in rows] == [
            (answer, "alice", "down", comment)
        ]
        assert rows[0]["updated_at"] == down.json()["updated_at"].replace("Z", "+00:00")
        assert await _export(http, BOB) == []

        assert (await http.delete(url, headers=ALICE)).status_code == 204
        assert (await http.delete(url, headers=ALICE)).status_code == 204  # idempotent
        assert "feedback" not in (await _messages(http, conversation))["assistant"]
        assert [r for r in await _export(http, ALICE) if r["conversation_id"] == conversation] == []

    # Analytics replay the conversation's feedback subject: every change, once, in order.
    client = await nats.connect(stack.nats_nodes[0].url)
    try:
        js = client.jetstream()
        subject = subjects.feedback_changed(conversation)
        # Published before each answer: the stream holds them all (and nothing more).
        info = await js.stream_info(topology.FEEDBACK_STREAM, subjects_filter=subject)
        held = (info.state.subjects or {}).get(subject, 0)
        sub = await js.subscribe(subject, ordered_consumer=True)
        changes = [
            FeedbackChanged.model_validate(json.loads((await sub.next_msg(timeout=10)).data))
            for _ in range(held)
        ]
    finally:
        await client.close()
    assert [(c.message_id, c.user_id, c.rating, c.comment) for c in changes] == [
        (answer, "alice", "up", None),
        (answer, "alice", "down", comment),
        (answer, "alice", None, None),
    ]
    assert len({c.change_id for c in changes}) == 3
