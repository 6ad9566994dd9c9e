"""POST /v1/conversations/{id}/messages against a real server, NATS and a fake worker."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

import httpx
import nats
import pytest
from fastapi import FastAPI
from httpx_sse import aconnect_sse

from contracts import ids, rpc, subjects, topology
from gateway.errors import install_error_handlers

SSE = {"Accept": "text/event-stream"}


async def read_sse(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, object],
    first: asyncio.Event | None = None,
):
    """The events of the answer; `first` is set once its first event came."""
    events = []
    async with aconnect_sse(client, "POST", url, json=body, headers=SSE) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        async for sse in source.aiter_sse():
            if sse.data:  # the `retry:` hint alone dispatches nothing in a browser
                events.append(sse)
                if first is not None:
                    first.set()
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
    pytest.param(b'{"content": "hi", "temperature": -0.1}', 422, "validation_error", id="temp-lo"),
    pytest.param(b'{"content": "hi", "temperature": NaN}', 422, "validation_error", id="temp-nan"),
    pytest.param(
        b'{"content": "hi", "max_tokens": 32769}', 422, "validation_error", id="max-tokens-hi"
    ),
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
        response = await client.post(
            "/v1/conversations/c6/messages",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert (await counts())["LIVECHAT_CHAT"] == 0


@pytest.mark.parametrize("conv", ["bad.id", "x" * 65, "sp ace", "abc%0A", "abc%0D%0A"])
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


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_a_body_that_is_not_json_is_415_and_publishes_nothing(
    gateway_url, counts, content_type
):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/ct/messages",
            content=b'{"content": "hi"}',
            headers={"Content-Type": content_type},
        )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}


async def test_json_with_a_charset_is_accepted(gateway_url, worker):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/cs/messages",
            content=b'{"content": "hi", "max_tokens": 32768, "temperature": 2}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
    assert response.status_code == 200
    assert worker.requests[0].options.max_tokens == 32768


async def test_when_nats_refuses_a_publish_the_503_names_the_id_to_retry_with(
    gateway_url, js, settings, counts, start_worker
):
    # The work stream is gone: the echo and the user message are stored, the
    # generation request cannot be (published in this order, one after the other).
    await js.delete_stream(topology.WORK_STREAM)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        failed = await client.post("/v1/conversations/na/messages", json={"content": "retry me"})
        assert failed.status_code == 503
        error = failed.json()["error"]
        assert error["code"] == "service_unavailable"
        message_id = error["message_id"]
        assert failed.headers["X-Message-Id"] == message_id
        await topology.ensure_streams(js, settings)
        fake = start_worker()
        retried = await client.post(
            "/v1/conversations/na/messages", json={"content": "retry me", "id": message_id}
        )
    assert retried.status_code == 200, retried.text
    assert retried.json()["message"]["id"] == ids.reply_id("na", message_id)
    assert retried.json()["message"]["content"] == "echo: retry me"
    # The retry completed the message; nothing of it was stored twice.
    counted = await counts()
    assert counted["LIVECHAT_CHAT"] == 1
    assert len(fake.requests) == 1
    echoes = await events_of(js, "na")
    assert [e["type"] for e in echoes].count("message") == 1


async def test_a_retry_of_a_message_stored_without_its_request_is_answered(
    gateway_url, js, settings, backends, start_worker
):
    # The work stream is gone: the echo and the user message are stored, the generation
    # request is not. Memory then holds the message, its echo is its newest event: the
    # retry must ask for the answer, not wait for one nobody generates.
    await js.delete_stream(topology.WORK_STREAM)
    body = {"content": "retry me", "id": "m-lost"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        failed = await client.post("/v1/conversations/lost/messages", json=body)
        assert failed.status_code == 503
        backends.add_conversation("lost", (user_message("m-lost", "retry me"),))
        await topology.ensure_streams(js, settings)
        fake = start_worker()
        retried = await client.post("/v1/conversations/lost/messages", json=body)
    assert retried.status_code == 200, retried.text
    assert retried.json()["message"]["content"] == "echo: retry me"
    assert [r.message_id for r in fake.requests] == [ids.reply_id("lost", "m-lost")]
    echoes = await events_of(js, "lost")
    assert [e["type"] for e in echoes].count("message") == 1


async def events_of(js, conv: str) -> list[dict[str, object]]:
    sub = await js.subscribe(
        subjects.events(conv), stream=topology.EVENTS_STREAM, ordered_consumer=True
    )
    found = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except nats.errors.TimeoutError:
                return found
            found.append(json.loads(msg.data))
    finally:
        await sub.unsubscribe()


def stored(
    reply: str,
    status: str = "complete",
    content: str = "stored answer",
    *,
    finish_reason: str | None = None,
    error: rpc.ReplyError | None = None,
) -> rpc.StoredMessage:
    return rpc.StoredMessage(
        id=reply,
        role="assistant",
        content=content,
        status=status,
        created_at="2025-01-01T00:00:00Z",
        model="demo",
        provider="fake",
        usage=None
        if status == "failed"
        else {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5},
        finish_reason=finish_reason,
        error=error,
    )


def user_message(message_id: str, content: str = "again") -> rpc.StoredMessage:
    return rpc.StoredMessage(
        id=message_id,
        role="user",
        content=content,
        status="complete",
        created_at="2025-01-01T00:00:00Z",
    )


@pytest.mark.parametrize("status", ["complete", "interrupted", "cancelled"])
async def test_a_final_reply_in_memory_is_answered_without_publishing(
    gateway_url, backends, counts, worker, status
):
    reply = ids.reply_id("mem", "m-1")
    backends.add_conversation("mem", (user_message("m-1"), stored(reply, status)))
    body = {"content": "again", "id": "m-1"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post("/v1/conversations/mem/messages", json=body)
        events = await read_sse(client, "/v1/conversations/mem/messages", body)
    assert response.status_code == 200
    message = response.json()["message"]
    assert message["content"] == "stored answer"
    assert message["status"] == status
    assert message["created_at"] == "2025-01-01T00:00:00Z"
    assert response.json()["usage"]["total_tokens"] == 5
    # SSE: the stored answer as events, each with an id like every other event.
    assert [e.event for e in events][-1] == "done"
    datas = [json.loads(e.data) for e in events]
    assert all(e.id == str(d["event_id"]) for e, d in zip(events, datas, strict=True))
    assert [int(e.id) for e in events] == sorted({int(e.id) for e in events})
    assert "".join(d["content"] for d in datas if d["type"] == "token") == "stored answer"
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}
    assert worker.requests == []


@pytest.mark.parametrize("finish_reason", ["length", "content_filter"])
async def test_a_final_reply_in_memory_ends_with_the_finish_reason_it_first_had(
    gateway_url, backends, counts, worker, finish_reason
):
    reply = ids.reply_id("cut", "m-1")
    kept = stored(reply, finish_reason=finish_reason)
    backends.add_conversation("cut", (user_message("m-1"), kept))
    body = {"content": "again", "id": "m-1"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post("/v1/conversations/cut/messages", json=body)
        events = await read_sse(client, "/v1/conversations/cut/messages", body)
        page = await client.get("/v1/conversations/cut")
    assert response.status_code == 200
    assert response.json()["message"]["finish_reason"] == finish_reason
    done = json.loads(events[-1].data)
    assert (events[-1].event, done["finish_reason"]) == ("done", finish_reason)
    # History shows it too (a field the design's message object may carry besides).
    assert page.json()["messages"][-1]["finish_reason"] == finish_reason
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}
    assert worker.requests == []


UNAVAILABLE = rpc.ReplyError(
    code="provider_unavailable",
    message="No model provider is available right now. Please try again shortly.",
    retryable=True,
)
# A failed reply stored before memory kept its error.
UNKNOWN_FAILURE = rpc.ReplyError(
    code="generation_failed", message="the reply could not be produced", retryable=False
)


@pytest.mark.parametrize(
    ("kept_error", "expected"), [(UNAVAILABLE, UNAVAILABLE), (None, UNKNOWN_FAILURE)]
)
async def test_a_failed_reply_in_memory_ends_with_the_error_it_first_had(
    gateway_url, backends, counts, worker, kept_error, expected
):
    reply = ids.reply_id("broke", "m-1")
    kept = stored(reply, "failed", "half an ans", error=kept_error)
    backends.add_conversation("broke", (user_message("m-1"), kept))
    body = {"content": "again", "id": "m-1"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post("/v1/conversations/broke/messages", json=body)
        events = await read_sse(client, "/v1/conversations/broke/messages", body)
    # JSON: answered as the live `error` event was.
    assert response.status_code == 503
    assert response.json()["error"] == {"code": expected.code, "message": expected.message}
    # SSE: the partial answer, then the same error.
    datas = [json.loads(e.data) for e in events]
    assert [e.event for e in events] == ["token", "error"]
    assert datas[0]["content"] == "half an ans"
    error = datas[-1]
    assert (error["code"], error["message"], error["retryable"]) == (
        expected.code,
        expected.message,
        expected.retryable,
    )
    assert error["message_id"] == reply
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}
    assert worker.requests == []


def huge_history(count: int = 9000) -> tuple[rpc.StoredMessage, ...]:
    """More than the NATS max_payload (8 MB here, 1 MiB by default) when sent whole."""
    return tuple(user_message(f"old-{i}", "x" * 1000) for i in range(count))


async def test_a_repeat_in_a_conversation_over_a_mib_is_answered_from_memory(
    gateway_url, backends, counts, worker
):
    reply = ids.reply_id("big", "m-1")
    history = (*huge_history(), user_message("m-1"), stored(reply, "complete"))
    backends.add_conversation("big", history)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        response = await client.post(
            "/v1/conversations/big/messages", json={"content": "again", "id": "m-1"}
        )
        page = await client.get("/v1/conversations/big")
    assert response.status_code == 200
    assert response.json()["message"]["content"] == "stored answer"
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}
    assert worker.requests == []
    # History without a limit: the newest page, not every message.
    assert page.status_code == 200
    assert len(page.json()["messages"]) == 200
    assert page.json()["messages"][-1]["id"] == reply
    assert page.json()["has_more"] is True


async def published(js) -> list[int]:
    """How many messages the chat and work streams ever took (the work queue forgets)."""
    names = (topology.CHAT_STREAM, topology.WORK_STREAM)
    return [(await js.stream_info(name)).state.last_seq for name in names]


async def test_a_repeat_of_a_message_in_flight_follows_it_instead_of_asking_again(
    gateway_url, backends, worker, js, settings
):
    # A dedupe window so short that the repeat comes after it, as after a long wait.
    await topology.ensure_streams(js, settings.model_copy(update={"dedupe_window_seconds": 0.2}))
    worker.hold = asyncio.Event()
    body = {"content": "slow", "id": "m-2"}
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        first = asyncio.create_task(read_sse(client, "/v1/conversations/fl/messages", body))
        await wait_for(lambda: bool(worker.requests))
        # Memory holds the user message (as it would past the dedupe window), no reply yet.
        backends.add_conversation("fl", (user_message("m-2", "slow"),))
        before = await published(js)
        await asyncio.sleep(0.5)  # past the window
        replayed = asyncio.Event()
        second = asyncio.create_task(
            read_sse(client, "/v1/conversations/fl/messages", body, replayed)
        )
        # Released once the repeat follows the generation (its replayed start came).
        await asyncio.wait_for(replayed.wait(), 20)
        worker.hold.set()
        first_events, second_events = await asyncio.gather(first, second)
    assert [e.id for e in second_events] == [e.id for e in first_events]
    assert second_events[-1].event == "done"
    assert len(worker.requests) == 1
    assert await published(js) == before


async def test_json_wait_that_times_out_is_503_timeout_and_detaches(gateway_server, worker):
    worker.hold = asyncio.Event()
    async with (
        gateway_server(generation_timeout_seconds=1.0) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as client,
    ):
        response = await client.post("/v1/conversations/to/messages", json={"content": "x"})
        metrics = (await client.get("/metrics")).text
    worker.hold.set()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "timeout"
    assert "livechat_gateway_listeners 0.0" in metrics


async def test_a_json_client_that_leaves_detaches_its_listener(gateway_url, worker):
    worker.hold = asyncio.Event()
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        waiting = asyncio.create_task(
            client.post("/v1/conversations/gone/messages", json={"content": "x"})
        )
        async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as probe:

            async def listeners() -> str:
                return (await probe.get("/metrics")).text

            await wait_for_async(lambda: listeners(), "livechat_gateway_listeners 1.0")
            waiting.cancel()  # the client closes its connection
            text = await wait_for_async(lambda: listeners(), "livechat_gateway_listeners 0.0")
    worker.hold.set()
    assert "livechat_gateway_listeners 0.0" in text


async def wait_for(check: Callable[[], bool]) -> None:
    for _ in range(400):
        if check():
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the condition never held")


async def wait_for_async(read: Callable[[], Awaitable[str]], wanted: str) -> str:
    text = ""
    for _ in range(400):
        text = await read()
        if wanted in text:
            return text
        await asyncio.sleep(0.025)
    raise AssertionError(f"never saw {wanted!r}")


async def test_an_unexpected_error_logs_its_class_never_its_text(caplog):
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("the user wrote: my secret plans")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger="gateway.errors"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/boom")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    [record] = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert record.levelno == logging.ERROR
    assert "RuntimeError" in record.getMessage()
    assert "secret" not in record.getMessage()
    assert record.exc_info is None
