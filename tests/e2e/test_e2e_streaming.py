"""A chat through the whole system: gateway, NATS, inference, memory, usage."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from apiclients import joined_tokens, sse_message, ws_message
from stacks import stored_conversation, stored_messages

from devstack.runner import DevStack


def _reply_events(events: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    start = next(e for e in events if e["type"] == "start")
    reply = start["message_id"]
    return reply, [e for e in events if e.get("message_id") == reply]


def _assert_one_generation(events: list[dict[str, Any]], conversation_id: str) -> str:
    reply, mine = _reply_events(events)
    types = [e["type"] for e in mine]
    assert types[0] == "start"
    assert types[-1] == "done"
    assert types.count("done") == 1 and "error" not in types
    assert "token" in types
    ids = [e["event_id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "event ids strictly increase"
    assert all(e["conversation_id"] == conversation_id for e in events)
    done = mine[-1]
    assert done["finish_reason"] in ("stop", "length")
    usage = done["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    return reply


async def test_sse_message_streams_and_the_stored_answer_equals_the_tokens(
    stack: DevStack,
) -> None:
    conversation = f"sse-{uuid.uuid4().hex[:8]}"
    events = await sse_message(
        stack.gateway_url, conversation, {"content": "Tell me about mountain rivers"}
    )
    reply = _assert_one_generation(events, conversation)

    stored = await stored_conversation(stack.gateway_url, conversation, 2)
    user, answer = stored["messages"]
    assert (user["role"], user["content"]) == ("user", "Tell me about mountain rivers")
    assert answer["role"] == "assistant" and answer["id"] == reply
    assert answer["status"] == "complete"
    assert answer["content"] == joined_tokens(events, reply)
    assert answer["usage"] == events[-1]["usage"]


async def test_websocket_message_streams_start_tokens_done(stack: DevStack) -> None:
    conversation = f"ws-{uuid.uuid4().hex[:8]}"
    ws_url = stack.gateway_url.replace("http://", "ws://") + "/v1/ws"
    frames = await ws_message(ws_url, conversation, {"content": "Hello over a socket"})
    reply = _assert_one_generation(frames, conversation)
    stored = await stored_conversation(stack.gateway_url, conversation, 2)
    assert stored["messages"][1]["content"] == joined_tokens(frames, reply)


async def test_json_mode_answers_with_the_message_and_its_usage(stack: DevStack) -> None:
    conversation = f"json-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        response = await client.post(
            f"/v1/conversations/{conversation}/messages", json={"content": "Plain request"}
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["message"]["role"] == "assistant"
    assert body["message"]["status"] == "complete"
    assert body["message"]["content"]
    assert body["usage"]["total_tokens"] > 0
    stored = await stored_conversation(stack.gateway_url, conversation, 2)
    assert stored["messages"][1]["content"] == body["message"]["content"]


async def test_usage_totals_equal_the_sum_of_the_generations(stack: DevStack) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
        before = (await client.get("/v1/usage")).json()["totals"]
        conversation = f"usage-{uuid.uuid4().hex[:8]}"
        results = [
            await sse_message(stack.gateway_url, conversation, {"content": f"question {i}"})
            for i in range(3)
        ]
        spent = [next(e for e in r if e["type"] == "done")["usage"] for r in results]
        expected = {
            key: before[key] + sum(u[key] for u in spent)
            for key in ("prompt_tokens", "completion_tokens", "total_tokens")
        }
        expected["requests"] = before["requests"] + 3
        totals: dict[str, int] = {}
        for _ in range(200):
            body = (await client.get("/v1/usage")).json()
            totals = {key: body["totals"][key] for key in expected}
            if totals == expected:
                break
            await asyncio.sleep(0.05)
    assert totals == expected
    assert body["by_model"], "usage is grouped by model alias"


async def test_follow_up_messages_get_the_conversation_as_context(stack: DevStack) -> None:
    conversation = f"ctx-{uuid.uuid4().hex[:8]}"
    await sse_message(stack.gateway_url, conversation, {"content": "first question"})
    second = await sse_message(stack.gateway_url, conversation, {"content": "second one"})
    first_usage = (await stored_messages(stack.gateway_url, conversation, 2))[1]["usage"]
    second_usage = next(e for e in second if e["type"] == "done")["usage"]
    # The second prompt carries the first exchange, so it is longer.
    assert second_usage["prompt_tokens"] > first_usage["prompt_tokens"]
    stored = await stored_conversation(stack.gateway_url, conversation, 4)
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant", "user", "assistant"]
