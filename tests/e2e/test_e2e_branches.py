"""The message tree through the public API of the whole system: edits start branches,
regenerations add sibling answers, PATCH switches branches, and the provider gets only
the path of the branch. The provider is a local server speaking Groq's wire format,
which records what it was sent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from apiclients import joined_tokens
from fake_openai import FakeOpenAI, ok
from httpx_sse import aconnect_sse
from stacks import FAST_ENV, running_stack, stored_messages
from websockets.asyncio.client import connect

from devstack.runner import DevStack

pytestmark = pytest.mark.nats


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, provider: FakeOpenAI) -> Iterator[DevStack]:
    env = {**FAST_ENV, "GROQ_API_KEY": "test-key", "GROQ_BASE_URL": provider.url}
    with running_stack(tmp_path_factory.mktemp("branches"), env) as running:
        yield running


def _conversation_id() -> str:
    return f"tree-{uuid.uuid4().hex[:10]}"


def _sent(provider: FakeOpenAI) -> list[tuple[str, str]]:
    """What the provider's last call was sent: (role, content), system messages aside."""
    return [
        (m["role"], m["content"])
        for m in provider.requests[-1].body["messages"]
        if m["role"] != "system"
    ]


async def _send(
    http: httpx.AsyncClient, conversation_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    response = await http.post(f"/v1/conversations/{conversation_id}/messages", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def _branch(http: httpx.AsyncClient, conversation_id: str) -> list[dict[str, Any]]:
    """The active branch once memory stored its last answer (it writes the history from
    the chat stream, a moment after the reply's `done`)."""
    for _ in range(400):
        response = await http.get(f"/v1/conversations/{conversation_id}")
        assert response.status_code == 200, response.text
        messages: list[dict[str, Any]] = response.json()["messages"]
        if messages[-1]["role"] == "assistant" and messages[-1]["status"] != "streaming":
            return messages
        await asyncio.sleep(0.05)
    raise AssertionError(f"{conversation_id}'s branch never ended with a stored answer")


def _error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


async def test_an_edit_starts_a_branch_and_the_provider_gets_only_its_path(
    stack: DevStack, provider: FakeOpenAI
) -> None:
    conv = _conversation_id()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        provider.script(ok(["Rivers run."]), ok(["Lakes rest."]))
        await _send(http, conv, {"id": "q1", "content": "Tell me about rivers"})
        await _send(http, conv, {"id": "q2", "content": "And lakes?"})
        flat = await stored_messages(stack.gateway_url, conv, 4)
        assert [m["parent_id"] for m in flat] == [None, flat[0]["id"], flat[1]["id"], "q2"]
        assert all(m["siblings"]["count"] == 1 for m in flat)
        r1 = flat[1]["id"]

        # Edit the second question: a new user message with the first answer as parent.
        provider.script(ok(["Seas roar."]))
        edited = await _send(http, conv, {"id": "q2b", "content": "And seas?", "parent_id": r1})
        assert _sent(provider) == [
            ("user", "Tell me about rivers"),
            ("assistant", "Rivers run."),
            ("user", "And seas?"),
        ]
        assert edited["message"]["content"] == "Seas roar."
        branch = await _branch(http, conv)
        assert [m["id"] for m in branch] == ["q1", r1, "q2b", edited["message"]["id"]]
        assert branch[2]["parent_id"] == r1
        assert branch[2]["siblings"] == {"index": 1, "count": 2, "ids": ["q2", "q2b"]}

        # The next message continues the active branch (the edited one).
        provider.script(ok(["Salty."]))
        await _send(http, conv, {"id": "q3", "content": "Salty?"})
        assert _sent(provider)[-3:] == [
            ("user", "And seas?"),
            ("assistant", "Seas roar."),
            ("user", "Salty?"),
        ]
        assert ("user", "And lakes?") not in _sent(provider)

        # Back to the first branch: through q2, down to its answer.
        response = await http.patch(f"/v1/conversations/{conv}", json={"active_message_id": "q2"})
        assert response.status_code == 200, response.text
        assert response.json()["id"] == conv
        branch = await _branch(http, conv)
        assert [m["id"] for m in branch] == ["q1", r1, "q2", flat[3]["id"]]
        assert branch[2]["siblings"] == {"index": 0, "count": 2, "ids": ["q2", "q2b"]}
        assert [m["content"] for m in branch][-1] == "Lakes rest."

        # An edit of the first message (parent null) is a new first message.
        provider.script(ok(["Mountains stand."]))
        await _send(
            http, conv, {"id": "q1b", "content": "Tell me about mountains", "parent_id": None}
        )
        assert _sent(provider) == [("user", "Tell me about mountains")]
        branch = await _branch(http, conv)
        assert branch[0]["id"] == "q1b"
        assert len(branch) == 2
        assert branch[0]["parent_id"] is None
        assert branch[0]["siblings"] == {"index": 1, "count": 2, "ids": ["q1", "q1b"]}


async def _accounted(http: httpx.AsyncClient, conversation_id: str, requests: int) -> int:
    """The conversation's accounted tokens once usage recorded `requests` replies (usage
    accounts them on its own time)."""
    for _ in range(600):
        response = await http.get("/v1/usage", params={"group_by": "conversation"})
        assert response.status_code == 200, response.text
        totals = response.json()["by_conversation"].get(conversation_id)
        if totals is not None and totals["requests"] >= requests:
            assert totals["requests"] == requests, totals
            return int(totals["total_tokens"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"usage never recorded {requests} replies of {conversation_id}")


async def test_regenerate_streams_a_sibling_answer_with_its_own_usage(
    stack: DevStack, provider: FakeOpenAI
) -> None:
    conv = _conversation_id()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        provider.script(ok(["First try."], usage=(11, 3)))
        first = await _send(http, conv, {"id": "q", "content": "Name a colour"})
        first_id = first["message"]["id"]
        assert await _accounted(http, conv, 1) == 14

        provider.script(ok(["Second", " try."], usage=(12, 4)))
        events: list[dict[str, Any]] = []
        async with aconnect_sse(
            http, "POST", f"/v1/conversations/{conv}/messages/q/regenerate"
        ) as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                if sse.data:
                    events.append(json.loads(sse.data))
                    if events[-1]["type"] in ("done", "error"):
                        break
        assert events[0]["type"] == "start"
        assert events[-1]["type"] == "done", events
        second_id = events[0]["message_id"]
        assert second_id != first_id
        assert joined_tokens(events, second_id) == "Second try."
        assert events[-1]["usage"] == {
            "prompt_tokens": 12,
            "completion_tokens": 4,
            "total_tokens": 16,
        }
        # Answered from the same context: the earlier answer is not part of it.
        assert _sent(provider) == [("user", "Name a colour")]

        branch = await stored_messages(stack.gateway_url, conv, 2)
        while branch[-1]["id"] != second_id:  # memory stores it once it ended
            branch = await stored_messages(stack.gateway_url, conv, 2)
        assert [m["id"] for m in branch] == ["q", second_id]
        assert branch[1]["content"] == "Second try."
        assert branch[1]["parent_id"] == "q"
        assert branch[1]["siblings"] == {"index": 1, "count": 2, "ids": [first_id, second_id]}
        assert branch[1]["usage"]["total_tokens"] == 16
        assert await _accounted(http, conv, 2) == 14 + 16

        # Back to the first answer, then a third one as JSON.
        response = await http.patch(
            f"/v1/conversations/{conv}", json={"active_message_id": first_id}
        )
        assert response.status_code == 200, response.text
        branch = await _branch(http, conv)
        assert [m["id"] for m in branch] == ["q", first_id]
        assert branch[1]["siblings"]["index"] == 0
        assert branch[1]["usage"]["total_tokens"] == 14

        provider.script(ok(["Third."]))
        third = await http.post(f"/v1/conversations/{conv}/messages/q/regenerate", json={})
        assert third.status_code == 200, third.text
        third_id = third.json()["message"]["id"]
        assert third.json()["message"]["content"] == "Third."
        assert third.json()["usage"]["total_tokens"] == 26
        assert third_id not in (first_id, second_id)
        assert await _accounted(http, conv, 3) == 14 + 16 + 26


async def test_regenerate_over_websocket(stack: DevStack, provider: FakeOpenAI) -> None:
    conv = _conversation_id()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        provider.script(ok(["One."]))
        first = await _send(http, conv, {"id": "q", "content": "Count"})
    provider.script(ok(["Two."]))
    ws_url = stack.gateway_url.replace("http", "ws", 1) + "/v1/ws"
    frames: list[dict[str, Any]] = []
    async with connect(ws_url, open_timeout=30) as ws:
        frame = {"type": "regenerate", "conversation_id": conv, "message_id": "q"}
        await ws.send(json.dumps(frame))
        while not frames or frames[-1]["type"] not in ("done", "error"):
            frames.append(json.loads(await ws.recv()))
        # A bad frame gets an error frame; the socket stays open.
        await ws.send(json.dumps({**frame, "message_id": first["message"]["id"]}))
        refused = json.loads(await ws.recv())
        assert (refused["type"], refused["code"]) == ("error", "not_a_user_message")
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
    assert frames[-1]["type"] == "done", frames
    reply_id = frames[-1]["message_id"]
    assert reply_id != first["message"]["id"]
    assert joined_tokens(frames, reply_id) == "Two."
    branch = await stored_messages(stack.gateway_url, conv, 2)
    while branch[-1]["id"] != reply_id:
        branch = await stored_messages(stack.gateway_url, conv, 2)
    assert branch[-1]["siblings"]["count"] == 2


async def test_bad_ids_are_refused_and_change_nothing(
    stack: DevStack, provider: FakeOpenAI
) -> None:
    conv = _conversation_id()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        provider.script(ok(["Fine."]))
        answer = await _send(http, conv, {"id": "q", "content": "Hello"})
        calls = len(provider.requests)
        before = await stored_messages(stack.gateway_url, conv, 2)

        messages = f"/v1/conversations/{conv}/messages"
        _error(await http.post(f"{messages}/nope/regenerate"), 404, "not_found")
        reply_id = answer["message"]["id"]
        _error(await http.post(f"{messages}/{reply_id}/regenerate"), 422, "not_a_user_message")
        _error(
            await http.post(f"/v1/conversations/{_conversation_id()}/messages/q/regenerate"),
            404,
            "not_found",
        )
        unknown_parent = {"content": "x", "parent_id": "nope"}
        _error(await http.post(messages, json=unknown_parent), 404, "not_found")
        bad_parent = {"content": "x", "parent_id": "not an id!"}
        _error(await http.post(messages, json=bad_parent), 422, "validation_error")
        switch = {"active_message_id": "nope"}
        _error(await http.patch(f"/v1/conversations/{conv}", json=switch), 404, "not_found")
        _error(
            await http.post(f"{messages}/q/regenerate", json={"model": "no-such-model"}),
            400,
            "unknown_model",
        )

        assert len(provider.requests) == calls
        assert await _branch(http, conv) == before
