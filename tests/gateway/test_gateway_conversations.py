"""The conversation endpoints against a real gateway, nats-server and memory service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import nats
import pytest
from httpx_sse import aconnect_sse
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import BaseModel

from contracts import ids, rpc, subjects, topology
from contracts.events import GenerationFailed, GenerationFinished, Usage, UserMessageAccepted
from memory import MemorySettings, create_app

T0 = datetime.now(UTC) - timedelta(hours=1)


@pytest.fixture
async def memory(nats_url: str, tmp_path: Path, nc: Client) -> AsyncIterator[None]:
    settings = MemorySettings(
        nats_url=nats_url,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}",
        data_dir=tmp_path / "memory",
        memory_ack_wait_seconds=2.0,
    )
    app = create_app(settings)
    await app.start()
    try:
        # Its subscriptions reach the server just after start: wait for its ping.
        with anyio.fail_after(30):
            while True:
                try:
                    await nc.request(subjects.ping("memory"), b"", timeout=1)
                    break
                except nats.errors.Error:
                    await anyio.sleep(0.05)
        yield
    finally:
        await app.stop()


@pytest.fixture
async def client(gateway_url: str, memory: None) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        yield http


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def say(
    js: JetStreamContext,
    conv: str,
    msg: str,
    content: str,
    seconds: float,
    *,
    user: str = "local",
    msg_id: str | None = None,
) -> None:
    event = UserMessageAccepted(
        message_id=msg, conversation_id=conv, user_id=user, content=content, created_at=at(seconds)
    )
    await js.publish(
        subjects.chat_user(conv),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": msg_id or ids.msg_id("user", conv, msg)},
    )


async def answer(
    js: JetStreamContext, conv: str, reply: str, to: str, content: str, seconds: float
) -> None:
    event = GenerationFinished(
        message_id=reply,
        conversation_id=conv,
        user_id="local",
        reply_to=to,
        content=content,
        status="complete",
        finish_reason="stop",
        model="demo",
        provider="demo",
        usage=Usage.of(10, 5),
        created_at=at(seconds),
        finished_at=at(seconds + 0.5),
    )
    await js.publish(
        subjects.chat_finished(conv),
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": ids.msg_id("fin", conv, reply)},
    )


async def until(client: httpx.AsyncClient, url: str, check: Any) -> dict[str, Any]:
    """GET `url` until `check(body)` holds (memory stores what the stream delivers)."""
    with anyio.fail_after(30):
        while True:
            response = await client.get(url)
            if response.status_code == 200 and check(response.json()):
                body: dict[str, Any] = response.json()
                return body
            await anyio.sleep(0.05)


async def events_held(js: JetStreamContext, conv: str) -> bool:
    """Whether LIVECHAT_EVENTS holds any event of the conversation."""
    try:
        await js.get_last_msg(topology.EVENTS_STREAM, subjects.events(conv))
    except NotFoundError:
        return False
    return True


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    code: str = body["error"]["code"]
    return code


async def ask_memory(nc: Client, subject: str, request: BaseModel) -> bytes:
    data: bytes = (await nc.request(subject, request.model_dump_json().encode(), timeout=10)).data
    return data


async def test_create_rename_and_delete_a_conversation(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/conversations", json={"title": "  Trip   plans ", "system_prompt": "Be brief."}
    )
    assert created.status_code == 201
    conversation = created.json()
    conv = conversation["id"]
    assert ids.is_valid_id(conv)
    assert conversation["title"] == "Trip plans"
    assert conversation["system_prompt"] == "Be brief."
    assert (conversation["message_count"], conversation["total_tokens"]) == (0, 0)
    assert {"created_at", "updated_at"} <= conversation.keys()

    listed = (await client.get("/v1/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [conv]

    renamed = await client.patch(f"/v1/conversations/{conv}", json={"title": "Lisbon in May"})
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "Lisbon in May"
    fetched = (await client.get(f"/v1/conversations/{conv}")).json()
    assert (fetched["title"], fetched["messages"], fetched["has_more"]) == (
        "Lisbon in May",
        [],
        False,
    )

    deleted = await client.delete(f"/v1/conversations/{conv}")
    assert deleted.status_code == 204 and deleted.content == b""
    missing = await client.get(f"/v1/conversations/{conv}")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    assert (await client.get("/v1/conversations")).json() == {"conversations": []}
    # Deleting again is the same success (a retried request); renaming it is not found.
    assert (await client.delete(f"/v1/conversations/{conv}")).status_code == 204
    assert (await client.patch(f"/v1/conversations/{conv}", json={"title": "x"})).status_code == 404


async def test_unknown_conversation_is_not_found_for_every_verb(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/v1/conversations/nope"),
        await client.patch("/v1/conversations/nope", json={"title": "x"}),
        await client.delete("/v1/conversations/nope"),
    ):
        assert response.status_code == 404 and error_code(response) == "not_found"


async def test_an_untitled_conversation_takes_its_first_message(
    client: httpx.AsyncClient, worker: object
) -> None:
    conv = (await client.post("/v1/conversations", json={})).json()["id"]
    sent = await client.post(
        f"/v1/conversations/{conv}/messages", json={"content": "Plan a weekend in Porto"}
    )
    assert sent.status_code == 200
    body = await until(client, f"/v1/conversations/{conv}", lambda b: b["messages"])
    assert body["title"] == "Plan a weekend in Porto"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "Plan a weekend in Porto")
    ]


async def test_list_is_newest_activity_first_paged_and_searchable(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    await say(js, "a", "a1", "Bread recipes", 0)
    await say(js, "b", "b1", "Tomato soup", 10)
    await say(js, "c", "c1", "Garden planning", 20)
    await answer(js, "a", "a2", "a1", "Knead the dough for ten minutes", 30)
    listed = await until(
        client, "/v1/conversations", lambda b: [c["id"] for c in b["conversations"]] == list("acb")
    )
    first = listed["conversations"][0]
    assert (first["title"], first["message_count"], first["total_tokens"]) == (
        "Bread recipes",
        2,
        15,
    )

    page = (await client.get("/v1/conversations", params={"limit": 2})).json()["conversations"]
    assert [c["id"] for c in page] == ["a", "c"]
    rest = await client.get("/v1/conversations", params={"limit": 2, "before": "c"})
    assert [c["id"] for c in rest.json()["conversations"]] == ["b"]

    # `q` finds titles and message text, ignoring case.
    for q, found in (("DOUGH", ["a"]), ("soup", ["b"]), ("plan", ["c"]), ("nothing", [])):
        hits = (await client.get("/v1/conversations", params={"q": q})).json()["conversations"]
        assert [c["id"] for c in hits] == found, q


async def test_messages_come_in_pages_oldest_first(
    client: httpx.AsyncClient, js: JetStreamContext
) -> None:
    for n in range(5):
        await say(js, "long", f"m{n}", f"message {n}", n)
    await until(client, "/v1/conversations/long", lambda b: len(b["messages"]) == 5)

    newest = (await client.get("/v1/conversations/long", params={"limit": 2})).json()
    assert [m["id"] for m in newest["messages"]] == ["m3", "m4"]
    assert newest["has_more"] is True
    assert newest["message_count"] == 5
    older = (await client.get("/v1/conversations/long", params={"limit": 2, "before": "m3"})).json()
    assert [m["id"] for m in older["messages"]] == ["m1", "m2"]
    oldest = (
        await client.get("/v1/conversations/long", params={"limit": 2, "before": "m1"})
    ).json()
    assert ([m["id"] for m in oldest["messages"]], oldest["has_more"]) == (["m0"], False)


async def test_delete_drops_history_replay_and_stale_redeliveries(
    client: httpx.AsyncClient, js: JetStreamContext, worker: object
) -> None:
    conv = "gone"
    sent = await client.post(f"/v1/conversations/{conv}/messages", json={"content": "secret"})
    assert sent.status_code == 200
    await until(client, f"/v1/conversations/{conv}", lambda b: b["messages"])
    assert await events_held(js, conv)

    assert (await client.delete(f"/v1/conversations/{conv}")).status_code == 204
    assert not await events_held(js, conv)  # the replay buffer holds none of them
    replay = await client.get(f"/v1/conversations/{conv}/events", params={"last_event_id": 0})
    assert replay.status_code == 204

    # A redelivery of an event older than the deletion does not bring it back; a new
    # message afterwards (in a conversation memory handles in order) proves it was read.
    await say(js, conv, "again", "secret", 0, msg_id="redelivered")
    await say(js, "later", "l1", "after", 1)
    await until(client, "/v1/conversations/later", lambda b: b["messages"])
    assert (await client.get(f"/v1/conversations/{conv}")).status_code == 404


async def test_another_users_conversation_is_not_found_and_unchanged(
    client: httpx.AsyncClient, js: JetStreamContext, nc: Client
) -> None:
    await say(js, "theirs", "t1", "private notes", 0, user="mallory")

    async def stored() -> rpc.ConversationGetReply:
        return rpc.ConversationGetReply.model_validate_json(
            await ask_memory(
                nc,
                subjects.MEMORY_CONVERSATION_GET,
                rpc.ConversationGetRequest(user_id="mallory", conversation_id="theirs"),
            )
        )

    with anyio.fail_after(30):
        while True:
            if (await stored()).messages:
                break
            await anyio.sleep(0.05)

    for response in (
        await client.get("/v1/conversations/theirs"),
        await client.patch("/v1/conversations/theirs", json={"title": "mine now"}),
        await client.delete("/v1/conversations/theirs"),
    ):
        assert response.status_code == 404
        assert "private" not in response.text
    assert (await client.get("/v1/conversations", params={"q": "private"})).json() == {
        "conversations": []
    }
    kept = await stored()
    assert kept.conversation is not None and kept.conversation.title == "private notes"
    assert [m.content for m in kept.messages] == ["private notes"]


@pytest.mark.parametrize(
    ("method", "url", "body", "status", "code"),
    [
        ("POST", "/v1/conversations", {"title": "ok", "owner": "x"}, 422, "validation_error"),
        ("POST", "/v1/conversations", {"title": ""}, 422, "validation_error"),
        ("POST", "/v1/conversations", {"title": "   "}, 422, "validation_error"),
        ("POST", "/v1/conversations", {"title": "t" * 201}, 422, "validation_error"),
        ("POST", "/v1/conversations", {"title": 5}, 422, "validation_error"),
        ("POST", "/v1/conversations", "{not json", 400, "invalid_json"),
        ("POST", "/v1/conversations", "x" * 5000, 413, "body_too_large"),
        ("PATCH", "/v1/conversations/c1", {}, 422, "validation_error"),
        ("PATCH", "/v1/conversations/c1", {"title": ""}, 422, "validation_error"),
        ("PATCH", "/v1/conversations/c1", {"name": "x"}, 422, "validation_error"),
        ("PATCH", "/v1/conversations/bad.id", {"title": "x"}, 400, "invalid_conversation_id"),
        ("GET", "/v1/conversations/bad.id", None, 400, "invalid_conversation_id"),
        ("DELETE", "/v1/conversations/bad.id", None, 400, "invalid_conversation_id"),
        ("GET", "/v1/conversations?limit=0", None, 422, "validation_error"),
        ("GET", "/v1/conversations?limit=201", None, 422, "validation_error"),
        ("GET", "/v1/conversations?before=bad.id", None, 422, "validation_error"),
        ("GET", "/v1/conversations/c1?limit=abc", None, 422, "validation_error"),
    ],
)
async def test_bad_input_gets_the_error_shape_and_changes_nothing(
    client: httpx.AsyncClient,
    js: JetStreamContext,
    method: str,
    url: str,
    body: object,
    status: int,
    code: str,
) -> None:
    await say(js, "c1", "m1", "Keep me", 0)
    before = await until(client, "/v1/conversations/c1", lambda b: b["messages"])
    content = body if isinstance(body, str) else None
    payload = None if isinstance(body, str) or body is None else body
    response = await client.request(
        method,
        url,
        json=payload,
        content=content,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert error_code(response) == code
    assert "Traceback" not in response.text
    assert (await client.get("/v1/conversations/c1")).json() == before
    assert [c["id"] for c in (await client.get("/v1/conversations")).json()["conversations"]] == [
        "c1"
    ]


async def test_without_memory_the_writes_answer_503(gateway_url: str) -> None:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        for response in (
            await http.post("/v1/conversations", json={"title": "x"}),
            await http.patch("/v1/conversations/c1", json={"title": "x"}),
            await http.delete("/v1/conversations/c1"),
        ):
            assert response.status_code == 503
            assert error_code(response) == "service_unavailable"


UNAVAILABLE = "No model provider is available right now. Please try again shortly."


async def end_reply(js: JetStreamContext, conv: str, reply: str, to: str, ending: str) -> None:
    """What a worker stores of a reply cut at the length limit, or failed for good."""
    head: dict[str, Any] = {
        "message_id": reply,
        "conversation_id": conv,
        "user_id": "local",
        "reply_to": to,
        "content": "Once upon",
        "model": "demo",
        "created_at": at(1),
        "finished_at": at(1.5),
    }
    if ending == "length":
        event: GenerationFinished | GenerationFailed = GenerationFinished(
            **head,
            status="complete",
            finish_reason="length",
            provider="demo",
            usage=Usage.of(10, 2),
        )
        subject, kind = subjects.chat_finished(conv), "fin"
    else:
        event = GenerationFailed(
            **head, code="provider_unavailable", message=UNAVAILABLE, retryable=True
        )
        subject, kind = subjects.chat_failed(conv), "failed"
    await js.publish(
        subject,
        event.model_dump_json().encode(),
        headers={"Nats-Msg-Id": ids.msg_id(kind, conv, reply)},
    )


@pytest.mark.parametrize("ending", ["length", "provider_unavailable"])
async def test_a_repeat_whose_events_aged_out_ends_as_its_reply_first_ended(
    client: httpx.AsyncClient, js: JetStreamContext, ending: str
) -> None:
    """Memory keeps how each reply ended: a repeated message id whose reply's events are
    gone from the stream gets the same finish reason, or the same error, from history."""
    conv, msg = f"ended-{ending}", "m-1"
    reply = ids.reply_id(conv, msg)
    await say(js, conv, msg, "Tell me a story", 0)
    await end_reply(js, conv, reply, msg, ending)
    page = await until(client, f"/v1/conversations/{conv}", lambda b: len(b["messages"]) == 2)
    assert not await events_held(js, conv)  # nothing left in the events stream

    body = {"content": "Tell me a story", "id": msg}
    url = f"/v1/conversations/{conv}/messages"
    answer = await client.post(url, json=body)
    async with aconnect_sse(
        client, "POST", url, json=body, headers={"Accept": "text/event-stream"}
    ) as source:
        events = [(sse.event, sse.json()) async for sse in source.aiter_sse() if sse.data]

    kept = page["messages"][1]
    assert [data.get("content") for name, data in events if name == "token"] == ["Once upon"]
    end, data = events[-1]
    if ending == "length":
        assert (kept["status"], kept["finish_reason"], "error" in kept) == (
            "complete",
            "length",
            False,
        )
        assert answer.status_code == 200
        assert answer.json()["message"]["finish_reason"] == "length"
        assert answer.json()["message"]["content"] == "Once upon"
        assert (end, data["finish_reason"]) == ("done", "length")
        assert data["usage"] == Usage.of(10, 2).model_dump()
    else:
        error = {"code": "provider_unavailable", "message": UNAVAILABLE, "retryable": True}
        assert (kept["status"], kept["error"], "finish_reason" in kept) == ("failed", error, False)
        assert answer.status_code == 503
        assert answer.json() == {"error": {"code": error["code"], "message": UNAVAILABLE}}
        assert end == "error"
        assert {k: data[k] for k in error} == error
    assert data["message_id"] == reply
    assert not await events_held(js, conv)  # answered from history, nothing published
