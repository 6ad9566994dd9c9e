"""/socket.io/: python-socketio's client (polling and WebSocket transports) against
a real gateway, NATS, the fake worker and fake backends; then the real npm
socket.io-client (tests/node/room.mjs) against the whole system with the demo model."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import socketio
import websockets
from pydantic import SecretStr
from sioclient import Client, connected
from stacks import FAST_ENV, running_stack, wait_ready

from contracts import ids, rpc
from contracts.events import Usage
from devstack.runner import DevStack

SECRET = "socket-io-test-secret-of-at-least-32-bytes"
NODE_DIR = Path(__file__).resolve().parents[1] / "node"
TRANSPORTS = [["polling"], ["websocket"]]


def reply_tokens(content: str) -> list[str]:
    """What the fake worker (conftest.FakeWorker) answers, token by token."""
    text = f"echo: {content}"
    return [text[i : i + 3] for i in range(0, len(text), 3)]


def token(sub: str) -> str:
    now = datetime.now(UTC)
    return jwt.encode({"sub": sub, "exp": now + timedelta(hours=1)}, SECRET, algorithm="HS256")


def stream_of(client: Client) -> list[tuple[str, Any]]:
    return [(e, d) for e, d in client.events if e.startswith("stream-")]


@pytest.fixture
async def quick_url(gateway_server) -> AsyncIterator[str]:
    """A gateway that pings every second: python-socketio's client, on polling, waits
    for the server's pending long poll (which a ping ends) when it disconnects."""
    async with gateway_server(ws_idle_timeout_seconds=2.0) as url:
        yield url


@pytest.mark.parametrize("transports", TRANSPORTS, ids=["polling", "websocket"])
async def test_a_stateless_stream_chat_streams_the_answer_to_the_caller(
    quick_url, worker, transports
):
    async with connected(quick_url, transports) as client:
        [hello] = await client.until("connected")
        assert hello == {"socketId": client.sio.get_sid()}
        messages = [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "tell me"},
        ]
        answer = await client.call("stream-chat", {"messages": messages})
        assert answer == {"ok": True}
        [complete] = await client.until("stream-complete")
    events = stream_of(client)
    assert events[0][0] == "stream-start"
    start = events[0][1]
    assert start["conversationId"].startswith("sio-")
    assert (start["model"], start["provider"]) == ("demo", "fake")
    chunks = [d for e, d in events if e == "stream-chunk"]
    tokens = reply_tokens("tell me")
    assert [c["content"] for c in chunks] == tokens
    # Each chunk carries the answer so far.
    assert [c["fullResponse"] for c in chunks] == [
        "".join(tokens[: i + 1]) for i in range(len(tokens))
    ]
    assert all(c["isComplete"] is False for c in chunks)
    assert complete["fullResponse"] == "".join(tokens)
    assert complete["finishReason"] == "stop"
    assert complete["usage"]["completion_tokens"] == len(tokens)
    assert datetime.fromisoformat(complete["timestamp"])
    # The messages are the context: handed to the worker, not stored anywhere.
    [request] = worker.requests
    assert request.content == "tell me"
    assert request.persist is False
    assert [(m.role, m.content) for m in request.history or ()] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "hello"),
    ]


async def test_bad_stream_chat_gets_a_stream_error_and_publishes_nothing(
    gateway_url, worker, counts
):
    before = await counts()
    async with connected(gateway_url, ["websocket"]) as client:
        await client.until("connected")
        bad = [
            {"messages": []},
            {"messages": [{"role": "user", "content": "x" * 101}]},  # max_message_chars
            {"messages": [{"role": "assistant", "content": "last is not the user's"}]},
            {"messages": [{"role": "user", "content": "hi"}], "model": "nope"},
            {"messages": [{"role": "user", "content": "hi"}], "roomName": "bad id!"},
            "not an object",
        ]
        for data in bad:
            answer = await client.call("stream-chat", data)
            assert "error" in answer, data
        errors = await client.until("stream-error", len(bad))
    assert [e["code"] for e in errors] == [
        "validation_error",
        "message_too_long",
        "invalid_messages",
        "unknown_model",
        "validation_error",
        "validation_error",
    ]
    assert all(e["retryable"] is False and e["message"] for e in errors)
    assert await counts() == before
    assert worker.requests == []


async def test_two_sockets_in_a_room_see_one_stream_and_others_are_kept_out(
    gateway_server, worker, backends
):
    secret = SecretStr(SECRET)
    async with gateway_server(jwt_secret=secret, ws_idle_timeout_seconds=2.0) as url:
        # Refused without a token, or with a bad one: connect_error, no socket.
        for auth in (None, {"token": "not-a-jwt"}):
            with pytest.raises(socketio.exceptions.ConnectionError):
                async with connected(url, ["websocket"], auth=auth):
                    pass
        alice = {"token": token("alice")}
        async with (
            connected(url, ["polling"], auth=alice) as first,
            # `?access_token=` works as well as the handshake's auth.
            connected(f"{url}?access_token={token('alice')}", ["websocket"]) as second,
            connected(url, ["websocket"], auth={"token": token("mallory")}) as other,
        ):
            joined = await first.call("join-room", {"roomName": "room-1"})
            assert joined == {"ok": True, "roomName": "room-1"}
            await second.call("join-room", {"roomName": "room-1", "participantName": "Ann"})
            [arrival] = await first.until("participant-joined")
            assert arrival["participantName"] == "Ann"
            assert arrival["socketId"] == second.sio.get_sid()
            # Another user's conversation: 404 as everywhere, nothing of it.
            refused = await other.call("join-room", {"roomName": "room-1"})
            assert refused["error"]["code"] == "not_found"
            chat = {"roomName": "room-1", "messages": [{"role": "user", "content": "hello"}]}
            refused = await other.call("stream-chat", chat)
            assert refused["error"]["code"] == "not_found"

            sent = await first.call("stream-chat", chat)
            assert sent == {"ok": True, "conversationId": "room-1"}
            [done_first] = await first.until("stream-complete")
            await second.until("stream-complete")
            assert stream_of(first) == stream_of(second)
            assert done_first["fullResponse"] == "".join(reply_tokens("hello"))
            await asyncio.sleep(0.2)  # nothing of the room reaches the other user
            assert [e for e in other.names() if e != "stream-error"] == ["connected"]
    [request] = worker.requests
    assert (request.conversation_id, request.user_id, request.content) == (
        "room-1",
        "alice",
        "hello",
    )
    assert request.persist is True


async def test_a_participant_joining_through_another_gateway_is_announced_to_all(
    gateway_server, worker, backends
):
    """Two gateways on one NATS: the room's sockets on both, and a WebSocket client
    following the conversation, hear of a newcomer on either."""
    async with (
        gateway_server(ws_idle_timeout_seconds=2.0) as one,
        gateway_server(ws_idle_timeout_seconds=2.0) as two,
        connected(one, ["websocket"]) as first,
        websockets.connect(one.replace("http://", "ws://") + "/v1/ws") as watcher,
    ):
        await first.call("join-room", {"roomName": "room-x", "participantName": "Ann"})
        await watcher.send(json.dumps({"type": "subscribe", "conversation_id": "room-x"}))
        # The watcher is told who is there already: the first socket, by its name.
        present = await _frame_of(watcher, "presence")
        assert (present["state"], present["client_id"]) == ("present", first.sio.get_sid())
        assert present["participant_name"] == "Ann"
        async with connected(two, ["polling"]) as second:
            await second.call("join-room", {"roomName": "room-x", "participantName": "Bo"})
            # The watcher (a participant over the WebSocket) first, then the socket.
            watcher_joined, arrival = await first.until("participant-joined", 2)
            assert watcher_joined["roomName"] == "room-x"
            assert "participantName" not in watcher_joined
            assert arrival == {
                "socketId": second.sio.get_sid(),
                "roomName": "room-x",
                "userId": arrival["userId"],
                "participantName": "Bo",
            }
            joined = await _frame_of(watcher, "presence")
            assert (joined["state"], joined["participant_name"]) == ("joined", "Bo")
            # A message in the room still reaches both sockets, whole.
            chat = {"roomName": "room-x", "messages": [{"role": "user", "content": "hey"}]}
            await second.call("stream-chat", chat)
            [done] = await first.until("stream-complete")
            await second.until("stream-complete")
            assert done["fullResponse"] == "".join(reply_tokens("hey"))
        # The second socket left: the watcher is told, the first socket hears no more.
        left = await _frame_of(watcher, "presence")
        assert (left["state"], left["client_id"]) == ("left", arrival["socketId"])
        assert first.names().count("participant-joined") == 2


async def _frame_of(ws: Any, kind: str) -> dict[str, Any]:
    """The next WebSocket frame of type `kind`, skipping the others."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame["type"] == kind:
            return frame


async def test_a_socket_through_a_host_not_allowed_is_refused(gateway_server, backends):
    async with gateway_server(allowed_hosts=("chat.internal",), ws_idle_timeout_seconds=2.0) as url:
        # A page on another name (DNS rebinding) that reaches the gateway: refused.
        refused = Client()
        with pytest.raises(socketio.exceptions.ConnectionError):
            async with connected(
                url, ["polling"], headers={"Host": "evil.example"}, client=refused
            ):
                pass
        assert [r["data"]["code"] for r in refused.refusals] == ["host_not_allowed"]
        async with connected(url, ["polling"], headers={"Host": "chat.internal"}) as served:
            [hello] = await served.until("connected")
            assert hello == {"socketId": served.sio.get_sid()}


async def test_a_user_at_the_connection_limit_gets_no_further_socket(gateway_server, backends):
    async with gateway_server(max_connections_per_user=1, ws_idle_timeout_seconds=2.0) as url:
        async with connected(url, ["websocket"]) as first:
            await first.until("connected")
            refused = Client()
            with pytest.raises(socketio.exceptions.ConnectionError):
                async with connected(url, ["websocket"], client=refused):
                    pass
            assert [(r["data"]["code"], r["data"]["retryable"]) for r in refused.refusals] == [
                ("too_many_connections", True)
            ]
        # The slot is given back once the first socket is gone (the server hears the
        # disconnect a moment after the client closed).
        for _ in range(100):
            again = Client()
            try:
                async with connected(url, ["websocket"], client=again):
                    await again.until("connected")
                    break
            except socketio.exceptions.ConnectionError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no socket after the first closed: {again.refusals}")


# --- the real socket.io-client (npm) against the whole system ----------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    assert shutil.which("node"), "node is needed for the socket.io-client test"
    assert (NODE_DIR / "node_modules" / "socket.io-client").is_dir(), (
        "tests/node has no node_modules: run `make install` (npm ci in tests/node)"
    )
    env = {**FAST_ENV, "LIVECHAT_JWT_SECRET": SECRET}
    with running_stack(tmp_path_factory.mktemp("socketio-stack"), env) as running:
        yield running


async def _node(script: str, request: dict[str, Any]) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        json.dumps(request),
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (stdout + stderr).decode()
    result: dict[str, Any] = json.loads(stdout)
    return result


async def test_socket_io_client_sees_one_stream_in_a_room_whole_and_stored(stack: DevStack):
    await wait_ready(stack.gateway_url)
    room = f"sio-room-{uuid.uuid4().hex[:8]}"
    alice = token("alice")
    result = await _node(
        "room.mjs",
        {
            "url": stack.gateway_url,
            "token": alice,
            "otherToken": token("mallory"),
            "room": room,
            "content": "Tell me about mountain rivers",
        },
    )
    assert result["status"] == "ok", result
    first, second = result["first"], result["second"]
    assert first[0] == ["connected", {"socketId": result["sockets"]["first"]}]
    assert second[0] == ["connected", {"socketId": result["sockets"]["second"]}]
    assert result["participant"]["participantName"] == "Bo"
    assert result["participant"]["socketId"] == result["sockets"]["second"]
    assert result["sent"] == {"ok": True, "conversationId": room}

    def stream(events: list[list[Any]]) -> list[list[Any]]:
        return [e for e in events if e[0] in ("stream-start", "stream-chunk", "stream-complete")]

    # Both sockets saw the same stream, whole: from its start to its end.
    assert stream(first) == stream(second)
    names = [e[0] for e in stream(first)]
    assert names[0] == "stream-start" and names[-1] == "stream-complete"
    assert set(names[1:-1]) == {"stream-chunk"}
    start, complete = stream(first)[0][1], stream(first)[-1][1]
    assert (start["conversationId"], start["provider"]) == (room, "demo")
    chunks = [e[1] for e in stream(first) if e[0] == "stream-chunk"]
    assert "".join(c["content"] for c in chunks) == complete["fullResponse"]
    assert chunks[-1]["fullResponse"] == complete["fullResponse"]

    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        headers = {"Authorization": f"Bearer {alice}"}
        for _ in range(400):
            response = await http.get(f"/v1/conversations/{room}", headers=headers)
            messages = response.json().get("messages", []) if response.status_code == 200 else []
            if len(messages) == 2 and messages[1]["status"] == "complete":
                break
            await asyncio.sleep(0.05)
    user, answer = messages
    assert (user["role"], user["content"]) == ("user", "Tell me about mountain rivers")
    assert answer["id"] == start["messageId"]
    assert answer["content"] == complete["fullResponse"]
    assert answer["usage"] == complete["usage"]

    # The errors: another user's room (404), a last message not the user's, a bad token.
    assert result["refusedJoin"]["error"]["code"] == "not_found"
    assert result["refusedJoinEvent"]["code"] == "not_found"
    assert [e[0] for e in result["other"]] == ["connected", "stream-error"]
    assert result["badEvent"]["code"] == "invalid_messages"
    assert result["badEvent"]["retryable"] is False
    assert result["badToken"]["refused"] is True
    assert result["badToken"]["data"]["code"] == "unauthorized"


async def test_a_repeated_message_id_in_a_room_is_answered_as_stored(
    quick_url, backends, worker, counts
):
    room, reply = "room-r", ids.reply_id("room-r", "m-1")
    created = datetime(2025, 1, 1, tzinfo=UTC)
    backends.add_conversation(
        room,
        (
            rpc.StoredMessage(
                id="m-1", role="user", content="hi", status="complete", created_at=created
            ),
            rpc.StoredMessage(
                id=reply,
                role="assistant",
                content="stored answer",
                status="complete",
                created_at=created,
                usage=Usage.of(3, 2),
                finish_reason="stop",
            ),
        ),
    )
    before = await counts()
    async with connected(quick_url, ["websocket"]) as client:
        chat = {
            "roomName": room,
            "messageId": "m-1",
            "messages": [{"role": "user", "content": "hi"}],
        }
        assert await client.call("stream-chat", chat) == {"ok": True, "conversationId": room}
        [complete] = await client.until("stream-complete")
    assert complete["messageId"] == reply
    assert complete["fullResponse"] == "stored answer"
    assert (complete["finishReason"], complete["usage"]["total_tokens"]) == ("stop", 5)
    # Answered once: nothing asked of the workers again.
    assert worker.requests == []
    assert await counts() == before
