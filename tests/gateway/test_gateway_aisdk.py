"""POST /api/chat and GET /api/chat/{id}/stream: the Vercel AI SDK UI message stream.

The wire format against a real gateway, NATS and the fake worker; then the
real npm `ai` package (DefaultChatTransport + readUIMessageStream, run with
node from tests/node) against the whole system with the demo model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts import ids, rpc, topology
from devstack.ports import free_port
from devstack.runner import DevStack
from devstack.settings import DevSettings

NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def _user(message_id: str, text: str) -> dict[str, Any]:
    return {"id": message_id, "role": "user", "parts": [{"type": "text", "text": text}]}


def _chat(chat_id: str, message_id: str, text: str, **extra: Any) -> dict[str, Any]:
    body = {"id": chat_id, "messages": [_user(message_id, text)], "trigger": "submit-message"}
    return body | extra


def _parts(raw: str) -> list[Any]:
    """The `data:` payloads of an SSE body, `[DONE]` as the string."""
    payloads = []
    for frame in raw.split("\n\n"):
        for line in frame.split("\n"):
            if line.startswith("data: "):
                data = line[len("data: ") :]
                payloads.append(data if data == "[DONE]" else json.loads(data))
    return payloads


async def _post_chat(base_url: str, body: dict[str, Any]) -> tuple[httpx.Response, list[Any]]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30) as http,
        http.stream("POST", "/api/chat", json=body) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_bytes()]).decode()
    return response, _parts(raw) if response.status_code == 200 else json.loads(raw)


def _text(parts: list[Any]) -> str:
    return "".join(p["delta"] for p in parts if isinstance(p, dict) and p["type"] == "text-delta")


async def test_a_message_streams_ui_message_parts(gateway_url, worker, counts):
    response, parts = await _post_chat(gateway_url, _chat("chat-1", "m1", "hi there"))
    assert response.status_code == 200
    assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
    assert response.headers["content-type"].startswith("text/event-stream")
    *objects, done = parts
    assert done == "[DONE]"
    types = [p["type"] for p in objects]
    deltas = types.count("text-delta")
    assert deltas > 1
    assert types == [
        "start",
        "start-step",
        "text-start",
        *["text-delta"] * deltas,
        "text-end",
        "finish-step",
        "finish",
    ]
    reply = ids.reply_id("chat-1", "m1")
    assert objects[0]["messageId"] == reply
    assert objects[0]["messageMetadata"] == {"model": "demo", "provider": "fake"}
    text_ids = {p["id"] for p in objects if p["type"].startswith("text-")}
    assert len(text_ids) == 1
    assert _text(objects) == "echo: hi there"
    finish = objects[-1]
    assert finish["finishReason"] == "stop"
    assert finish["messageMetadata"]["usage"]["total_tokens"] > 0
    # The same path as any message: stored as the user's, answered once.
    [request] = worker.requests
    assert (request.conversation_id, request.user_message_id) == ("chat-1", "m1")
    assert request.history is None and request.persist is True
    assert (await counts())[topology.CHAT_STREAM] == 1


async def test_a_repeated_message_is_answered_once_and_relayed_again(gateway_url, worker):
    _, first = await _post_chat(gateway_url, _chat("chat-2", "m1", "once"))
    _, again = await _post_chat(gateway_url, _chat("chat-2", "m1", "once"))
    assert again == first
    assert len(worker.requests) == 1


async def test_a_failed_generation_ends_with_an_error_part(gateway_url, worker):
    response, parts = await _post_chat(gateway_url, _chat("chat-3", "m1", "fail now"))
    assert response.status_code == 200
    assert parts[-2:] == [{"type": "error", "errorText": "down"}, "[DONE]"]
    assert parts[0]["type"] == "start"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"id": "chat-4", "messages": []}, 422, "validation_error"),
        (_chat("bad id!", "m1", "x"), 422, "validation_error"),
        (_chat("chat-4", "m1", "x", trigger="other"), 422, "validation_error"),
        (_chat("chat-4", "m1", "x", unknown=1), 422, "validation_error"),
        (_chat("chat-4", "m1", "   "), 422, "validation_error"),
        (_chat("chat-4", "m1", "x", model="nope"), 400, "unknown_model"),
        (
            {"id": "chat-4", "messages": [{"id": "a", "role": "assistant", "parts": []}]},
            422,
            "validation_error",
        ),
    ],
)
async def test_bad_bodies_get_an_error_and_publish_nothing(gateway_url, counts, body, status, code):
    response, error = await _post_chat(gateway_url, body)
    assert response.status_code == status
    assert error["error"]["code"] == code
    assert (await counts())[topology.WORK_STREAM] == 0


async def test_resume_relays_the_reply_in_flight_from_its_first_part(gateway_url, worker):
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        idle = await http.get("/api/chat/chat-5/stream")
        assert idle.status_code == 204

        worker.hold = asyncio.Event()
        sending = asyncio.create_task(_post_chat(gateway_url, _chat("chat-5", "m1", "held")))
        for _ in range(500):
            if worker.requests:
                break
            await asyncio.sleep(0.02)
        async with http.stream("GET", "/api/chat/chat-5/stream") as resumed:
            assert resumed.status_code == 200
            assert resumed.headers["x-vercel-ai-ui-message-stream"] == "v1"
            worker.hold.set()
            raw = b"".join([chunk async for chunk in resumed.aiter_bytes()]).decode()
        _, sent = await sending
        assert _parts(raw) == sent
        assert _text(sent) == "echo: held"

        assert (await http.get("/api/chat/chat-5/stream")).status_code == 204
        # An unknown chat has nothing in flight (`useChat` asks on mount, new chats too).
        assert (await http.get("/api/chat/not-mine/stream")).status_code == 204
        bad = await http.get("/api/chat/bad%20id/stream")
        assert bad.status_code == 400


async def test_resume_answers_another_users_chat_as_an_unknown_one(
    gateway_server, worker, backends
):
    keys = {"key-alice": "alice", "key-bob": "bob"}
    async with gateway_server(api_keys=keys) as url:
        alice, bob = {"X-API-Key": "key-alice"}, {"X-API-Key": "key-bob"}
        response, _ = await _post_chat_as(url, _chat("owned", "m1", "mine"), alice)
        assert response.status_code == 200
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            others = await http.get("/api/chat/owned/stream", headers=bob)
            own = await http.get("/api/chat/owned/stream", headers=alice)
            unknown = await http.get("/api/chat/nobodys/stream", headers=bob)
    # Whether an id is in use (and by whom) is not told: the same 204 as nothing there.
    assert others.status_code == unknown.status_code == own.status_code == 204
    assert others.content == unknown.content == b""
    assert set(others.headers) == set(unknown.headers)


async def _post_chat_as(
    base_url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[httpx.Response, list[Any]]:
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as http,
        http.stream("POST", "/api/chat", json=body) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_bytes()]).decode()
    return response, _parts(raw) if response.status_code == 200 else json.loads(raw)


async def test_a_repost_past_the_dedupe_window_is_answered_from_memory(
    gateway_url, worker, backends, counts
):
    when = datetime.now(UTC)
    user = rpc.StoredMessage(id="m1", role="user", content="hi", status="complete", created_at=when)
    reply = rpc.StoredMessage(
        id=ids.reply_id("chat-8", "m1"),
        role="assistant",
        content="stored answer",
        status="complete",
        created_at=when,
    )
    backends.add_conversation("chat-8", (user, reply))
    response, parts = await _post_chat(gateway_url, _chat("chat-8", "m1", "hi"))
    assert response.status_code == 200
    assert _text(parts) == "stored answer"
    assert parts[-1] == "[DONE]"
    assert worker.requests == []
    assert await counts() == {"LIVECHAT_CHAT": 0, "LIVECHAT_WORK": 0, "LIVECHAT_EVENTS": 0}


@pytest.mark.parametrize("ending", ["length", "provider_unavailable"])
async def test_a_repost_answered_from_memory_ends_as_the_reply_first_ended(
    gateway_url, worker, backends, ending
):
    when = datetime.now(UTC)
    user = rpc.StoredMessage(id="m1", role="user", content="hi", status="complete", created_at=when)
    message = "No model provider is available right now."
    reply = rpc.StoredMessage(
        id=ids.reply_id("chat-9", "m1"),
        role="assistant",
        content="Once upon",
        status="complete" if ending == "length" else "failed",
        created_at=when,
        finish_reason="length" if ending == "length" else None,
        error=None
        if ending == "length"
        else rpc.ReplyError(code="provider_unavailable", message=message, retryable=True),
    )
    backends.add_conversation("chat-9", (user, reply))
    response, parts = await _post_chat(gateway_url, _chat("chat-9", "m1", "hi"))
    assert response.status_code == 200
    assert _text(parts) == "Once upon"
    assert parts[-1] == "[DONE]"
    end = parts[-2]
    if ending == "length":
        assert (end["type"], end["finishReason"]) == ("finish", "length")
    else:
        assert end == {"type": "error", "errorText": message}
    assert worker.requests == []


async def test_regenerate_asks_for_a_new_reply_to_the_stored_user_message(
    gateway_url, worker, backends, counts
):
    stored = rpc.StoredMessage(
        id="m1", role="user", content="again", status="complete", created_at=datetime.now(UTC)
    )
    backends.add_conversation("chat-6", (stored,))
    body = _chat("chat-6", "m1", "again", trigger="regenerate-message", messageId="old")
    response, parts = await _post_chat(gateway_url, body)
    assert response.status_code == 200
    [request] = worker.requests
    assert request.user_message_id == "m1"
    assert request.content == "again"
    assert request.message_id != ids.reply_id("chat-6", "m1")
    assert parts[0]["messageId"] == request.message_id
    assert _text(parts) == "echo: again"
    # No second copy of the user message: only the work item was published.
    assert (await counts())[topology.CHAT_STREAM] == 0

    response, error = await _post_chat(
        gateway_url, _chat("chat-unknown", "m1", "x", trigger="regenerate-message")
    )
    assert response.status_code == 404
    assert error["error"]["code"] == "not_found"


# --- the real AI SDK against the whole system ------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    assert shutil.which("node"), "node is needed for the AI SDK tests"
    assert (NODE_DIR / "node_modules" / "ai").is_dir(), (
        "tests/node has no node_modules: run `make install` (npm ci in tests/node)"
    )
    port = free_port()
    data_dir: Path = tmp_path_factory.mktemp("aisdk-stack")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVECHAT_") and not k.endswith("_API_KEY")
    }
    env |= {
        # Slow enough that a dropped stream can be resumed before the answer ends.
        "LIVECHAT_DEMO_TTFT_MS": "30",
        "LIVECHAT_DEMO_TOKENS_PER_SECOND": "25",
        "LIVECHAT_DEMO_MAX_TOKENS": "80",
        "LIVECHAT_LOG_LEVEL": "WARNING",
        "LIVECHAT_HTTP_PORT": str(port),
        "LIVECHAT_DATA_DIR": str(data_dir),
    }
    running = DevStack(DevSettings(data_dir=data_dir, http_port=port, max_restarts=0), env=env)
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def _node(request: dict[str, Any]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        "chat.mjs",
        json.dumps(request),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (stdout + stderr).decode()
    result: dict[str, Any] = json.loads(stdout)
    return result


async def _stored(
    base_url: str, chat_id: str, count: int, last: str | None = None
) -> list[dict[str, Any]]:
    """The active branch once it holds `count` final messages (and ends at `last`)."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        for _ in range(300):
            response = await http.get(f"/v1/conversations/{chat_id}")
            if response.status_code == 200:
                messages: list[dict[str, Any]] = response.json()["messages"]
                if (
                    len(messages) >= count
                    and all(m["status"] != "streaming" for m in messages)
                    and (last is None or messages[-1]["id"] == last)
                ):
                    return messages
            await asyncio.sleep(0.05)
    raise AssertionError(f"chat {chat_id} never held {count} messages")


async def test_the_ai_sdk_streams_the_stored_answer_and_regenerates(stack: DevStack):
    api = f"{stack.gateway_url}/api/chat"
    chat_id = f"sdk-{uuid.uuid4().hex[:8]}"
    user = _user("u1", "Tell me about mountain rivers")
    sent = await _node({"action": "send", "api": api, "chatId": chat_id, "messages": [user]})
    assert sent["status"] == "stream", sent
    assert sent["errors"] == []
    message = sent["message"]
    assert message["role"] == "assistant"
    assert "rivers" in sent["text"]
    assert message["metadata"]["provider"] == "demo"  # the default alias `auto`, offline
    assert sent["chunks"][-1]["type"] == "finish"

    user_stored, answer = await _stored(stack.gateway_url, chat_id, 2)
    assert (user_stored["id"], user_stored["content"]) == ("u1", user["parts"][0]["text"])
    assert answer["id"] == message["id"]
    assert answer["content"] == sent["text"]
    assert message["metadata"]["usage"] == answer["usage"]

    # Nothing in flight any more: the transport gets null, as from a 204.
    idle = await _node({"action": "resume", "api": api, "chatId": chat_id})
    assert idle == {"status": "none"}

    regenerated = await _node(
        {
            "action": "send",
            "api": api,
            "chatId": chat_id,
            "messages": [user],
            "trigger": "regenerate-message",
            "messageId": message["id"],
        }
    )
    assert regenerated["status"] == "stream", regenerated
    assert regenerated["message"]["id"] != message["id"]
    # The new answer is a sibling of the first, and ends the active branch.
    again = regenerated["message"]["id"]
    stored = await _stored(stack.gateway_url, chat_id, 2, last=again)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == regenerated["text"]
    assert stored[1]["siblings"] == {"index": 1, "count": 2, "ids": [message["id"], again]}


async def test_the_ai_sdk_sends_an_image_file_part_and_regenerates_with_it(stack: DevStack):
    """A file part as the SDK makes one of a picked file (a data URL): the model is given
    the image (the demo model says what it saw), the history keeps it, and another
    answer to the message is given it again."""
    api = f"{stack.gateway_url}/api/chat"
    chat_id = f"sdk-{uuid.uuid4().hex[:8]}"
    gif = b"GIF89a" + bytes(range(40))
    picture = {
        "type": "file",
        "mediaType": "image/gif",
        "filename": "dot.gif",
        "url": "data:image/gif;base64," + base64.b64encode(gif).decode(),
    }
    user = {**_user("u1", "What is in this picture?")}
    user["parts"] = [*user["parts"], picture]
    seen = f"(I see 1 image: image/gif of {len(gif)} bytes.)"
    sent = await _node({"action": "send", "api": api, "chatId": chat_id, "messages": [user]})
    assert sent["status"] == "stream", sent
    assert sent["text"].startswith(seen)
    question, _ = await _stored(stack.gateway_url, chat_id, 2)
    assert question["attachments"] == [
        {"type": "image", "media_type": "image/gif", "data": base64.b64encode(gif).decode()}
    ]

    regenerated = await _node(
        {
            "action": "send",
            "api": api,
            "chatId": chat_id,
            "messages": [user],
            "trigger": "regenerate-message",
            "messageId": sent["message"]["id"],
        }
    )
    assert regenerated["status"] == "stream", regenerated
    assert regenerated["message"]["id"] != sent["message"]["id"]
    assert regenerated["text"].startswith(seen)


async def test_a_dropped_stream_is_resumed_with_reconnect_to_stream(stack: DevStack):
    api = f"{stack.gateway_url}/api/chat"
    chat_id = f"sdk-{uuid.uuid4().hex[:8]}"
    user = _user("u1", "Explain ocean currents and tides")
    # The page goes away after a few tokens (a drop, not a stop)…
    dropped = await _node(
        {
            "action": "send",
            "api": api,
            "chatId": chat_id,
            "messages": [user],
            "abortAfterDeltas": 3,
        }
    )
    assert dropped["status"] == "stream", dropped
    partial = dropped["text"]
    assert partial
    # …and the reloaded page resumes the reply, from its start, to its end.
    resumed = await _node({"action": "resume", "api": api, "chatId": chat_id})
    assert resumed["status"] == "stream", resumed
    assert resumed["errors"] == []
    assert resumed["message"]["id"] == dropped["message"]["id"]
    assert resumed["text"].startswith(partial)
    assert len(resumed["text"]) > len(partial)
    assert resumed["chunks"][-1]["type"] == "finish"

    _, answer = await _stored(stack.gateway_url, chat_id, 2)
    assert answer["status"] == "complete"
    assert answer["content"] == resumed["text"]
