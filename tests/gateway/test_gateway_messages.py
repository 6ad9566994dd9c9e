"""POST /v1/conversations/{id}/messages against a real server, NATS and a fake worker."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from httpx_sse import aconnect_sse

from contracts import ids, rpc, subjects, topology

SSE = {"Accept": "text/event-stream"}


async def read_sse(client: httpx.AsyncClient, url: str, body: dict[str, object]):
    events = []
    async with aconnect_sse(client, "POST", url, json=body, headers=SSE) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if sse.data:  # the `retry:` hint alone dispatches nothing in a browser
                events.append(sse)
    return events


async def test_sse_streams_start_tokens_done_with_increasing_ids(gateway_url, worker):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        events = await read_sse(client, "/v1/conversations/c1/messages", {"content": "hi there"})
    types = [e.event for e in events]
    assert types[0] == "start"
    assert types[-1] == "done"
    assert set(types[1:-1]) <= {"status", "token"}
    event_ids = [int(e.id) for e in events]
    assert event_ids == sorted(set(event_ids))
    datas = [json.loads(e.data) for e in events]
    for sse, data in zip(events, datas, strict=True):
        assert data["type"] == sse.event
        assert data["event_id"] == int(sse.id)
        assert data["conversation_id"] == "c1"
        assert "schema_version" not in data
    reply = datas[0]["message_id"]
    assert all(d["message_id"] == reply for d in datas)
    assert "".join(d["content"] for d in datas if d["type"] == "token") == "echo: hi there"
    assert datas[-1]["finish_reason"] == "stop"
    assert datas[-1]["usage"]["total_tokens"] > 0


async def test_sse_framing_has_retry_hint(gateway_url, worker):
    async with (
        httpx.AsyncClient(base_url=gateway_url, timeout=30) as client,
        client.stream(
            "POST", "/v1/conversations/c2/messages", json={"content": "x"}, headers=SSE
        ) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_bytes()]).decode()
    assert raw.startswith("retry: ")
    assert "\nevent: start\ndata: {" in raw
    assert raw.rstrip("\n").split("\n\n")[-1].split("\n")[1] == "event: done"


async def test_json_mode_returns_the_assistant_message(gateway_url, worker):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/c3/messages", json={"content": "hello", "id": "m1", "model": "demo"}
        )
    assert response.status_code == 200
    body = response.json()
    message = body["message"]
    assert message["id"] == ids.reply_id("c3", "m1")
    assert message["role"] == "assistant"
    assert message["content"] == "echo: hello"
    assert message["status"] == "complete"
    assert message["model"] == "demo"
    assert message["provider"] == "fake"
    assert body["usage"] == message["usage"]
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert worker.requests[0].options.model == "demo"
    assert worker.requests[0].user_id == "local"


async def test_json_mode_error_event_is_an_error_response(gateway_url, worker):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post("/v1/conversations/c4/messages", json={"content": "fail me"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"


async def test_repeated_message_id_is_not_published_or_answered_twice(gateway_url, worker, counts):
    body = {"content": "once", "id": "same-id"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        first = await client.post("/v1/conversations/dup/messages", json=body)
        before = await counts()
        second = await client.post("/v1/conversations/dup/messages", json=body)
        replayed = await read_sse(client, "/v1/conversations/dup/messages", body)
        after = await counts()
    assert first.status_code == second.status_code == 200
    assert second.json()["message"]["content"] == first.json()["message"]["content"]
    assert len(worker.requests) == 1
    assert after == before
    assert after["LIVECHAT_CHAT"] == 1
    # The SSE retry relays the stored generation: the same events, the same ids.
    assert replayed[0].event == "start"
    assert replayed[-1].event == "done"
    tokens = [json.loads(e.data)["content"] for e in replayed if e.event == "token"]
    assert "".join(tokens) == "echo: once"


async def test_repeated_message_id_after_events_aged_out_answers_from_memory(
    gateway_url, backends, js, counts
):
    reply = ids.reply_id("old", "m-old")
    backends.add_conversation(
        "old",
        (
            rpc.StoredMessage(
                id=reply,
                role="assistant",
                content="stored answer",
                status="complete",
                created_at="2025-01-01T00:00:00Z",
                model="demo",
                provider="fake",
            ),
        ),
    )
    # The user message was accepted before (same Nats-Msg-Id), its events are gone.
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        await js.publish(
            subjects.chat_user("old"),
            b"{}",
            headers={"Nats-Msg-Id": ids.msg_id("user", "old", "m-old")},
        )
        response = await client.post(
            "/v1/conversations/old/messages", json={"content": "again", "id": "m-old"}
        )
    assert response.status_code == 200
    assert response.json()["message"]["content"] == "stored answer"


BAD_BODIES = [
    pytest.param(b"{not json", 400, "invalid_json", id="not-json"),
    pytest.param(b"", 400, "invalid_json", id="empty-body"),
    pytest.param(b"[1, 2]", 422, "validation_error", id="not-an-object"),
    pytest.param(b'{"content": "hi", "extra": 1}', 422, "validation_error", id="unknown-field"),
    pytest.param(b'{"content": ""}', 422, "validation_error", id="empty-content"),
    pytest.param(b'{"content": "   "}', 422, "validation_error", id="blank-content"),
    pytest.param(b'{"id": "x"}', 422, "validation_error", id="no-content"),
    pytest.param(b'{"content": 5}', 422, "validation_error", id="content-not-a-string"),
    pytest.param(b'{"content": "hi", "id": "bad id!"}', 422, "validation_error", id="bad-msg-id"),
    pytest.param(b'{"content": "hi", "max_tokens": 0}', 422, "validation_error", id="max-tokens"),
    pytest.param(b'{"content": "hi", "temperature": 9}', 422, "validation_error", id="temp"),
    pytest.param(b'{"content": "hi", "model": "gpt-9"}', 400, "unknown_model", id="model"),
    pytest.param(
        json.dumps({"content": "y" * 101}).encode(), 413, "message_too_long", id="too-long"
    ),
    pytest.param(
        json.dumps({"content": "hi", "system_prompt": "z" * 5000}).encode(),
        413,
        "body_too_large",
        id="body-too-large",
    ),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_BODIES)
async def test_bad_input_gets_the_error_shape_and_publishes_nothing(
    gateway_url, counts, body, status, code
):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/c5/messages",
            content=body,
            headers={"Content-Type": "application/json", **SSE},
        )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    if code == "unknown_model":
        assert "groq-llama-70b" in error["message"]
    assert "Traceback" not in response.text
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}


async def test_chunked_body_over_the_limit_is_413(gateway_url, counts):
    async def chunks():
        for _ in range(10):
            yield b" " * 1000

    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post("/v1/conversations/c6/messages", content=chunks())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert (await counts())["LIVECHAT_CHAT"] == 0


@pytest.mark.parametrize("conv", ["bad.id", "x" * 65, "sp ace"])
async def test_invalid_conversation_id_is_400(gateway_url, counts, conv):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(f"/v1/conversations/{conv}/messages", json={"content": "hi"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_conversation_id"
    assert (await counts())["LIVECHAT_CHAT"] == 0


async def test_client_disconnect_stops_only_the_relay(gateway_url, worker, js):
    worker.hold = asyncio.Event()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        async with aconnect_sse(
            client, "POST", "/v1/conversations/dc/messages", json={"content": "bye"}, headers=SSE
        ) as source:
            async for sse in source.aiter_sse():
                if sse.event == "start":
                    break
        # The client is gone; the generation goes on to its end.
        worker.hold.set()
        response = await client.get("/healthz")
        assert response.status_code == 200
    for _ in range(400):
        last = await js.get_last_msg(topology.EVENTS_STREAM, subjects.events("dc"))
        if json.loads(last.data)["type"] == "done":
            break
        await asyncio.sleep(0.05)
    assert json.loads(last.data)["type"] == "done"
