"""Nothing lost, nothing doubled when a worker or memory dies mid-run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from apiclients import joined_tokens, sse_events
from stacks import stored_messages

from devstack.runner import DevStack


async def test_a_worker_killed_mid_generation_leaves_the_request_to_another(
    make_stack: Any,
) -> None:
    # Slow enough that the kill lands in the middle of the answer.
    stack: DevStack = make_stack(LIVECHAT_DEMO_TOKENS_PER_SECOND="25")
    conversation = f"kill-{uuid.uuid4().hex[:8]}"
    events: list[dict[str, Any]] = []
    killed = False
    body = {"content": "a long story about lighthouses"}
    async for event in sse_events(stack.gateway_url, conversation, body, timeout=90):
        events.append(event)
        if event["type"] == "token" and not killed and len(events) > 6:
            stack.kill("inference")
            killed = True
            stack.restart("inference")  # the "other worker"
    assert killed
    reply = next(e for e in events if e["type"] == "start")["message_id"]
    types = [e["type"] for e in events if e.get("message_id") == reply]
    assert types.count("done") == 1 and "error" not in types
    assert types.count("start") == 1
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)

    messages = await stored_messages(stack.gateway_url, conversation, 2)
    assert messages[1]["status"] == "complete"
    assert messages[1]["content"] == joined_tokens(events, reply)
    assert len([m for m in messages if m["role"] == "assistant"]) == 1
    # Shown as billed: the done event, the stored reply and the ledger, both attempts.
    done = next(e for e in events if e["type"] == "done")
    assert messages[1]["usage"] == done["usage"]
    assert await _billed(stack.gateway_url) == done["usage"]


async def _billed(base_url: str) -> dict[str, int]:
    """The caller's totals in the ledger once both attempts of the reply are in it."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        for _attempt in range(400):
            export = await client.get("/v1/usage/export")
            if export.status_code == 200 and len(export.text.strip().splitlines()) == 3:
                totals = (await client.get("/v1/usage")).json()["totals"]
                return {
                    k: totals[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")
                }
            await asyncio.sleep(0.05)
    raise AssertionError("the ledger never held both attempts")


async def test_memory_stopped_and_restarted_mid_run_loses_nothing(make_stack: Any) -> None:
    stack: DevStack = make_stack()
    conversation = f"mem-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=90) as client:
        first = await client.post(
            f"/v1/conversations/{conversation}/messages", json={"content": "before the crash"}
        )
        assert first.status_code == 200
        stack.kill("memory")

        async def send(text: str) -> httpx.Response:
            return await client.post(
                f"/v1/conversations/{conversation}/messages", json={"content": text}
            )

        pending = asyncio.gather(send("while memory is down"))
        await asyncio.sleep(1.0)
        stack.restart("memory")
        (second,) = await pending
    assert second.status_code == 200, second.text

    messages = await stored_messages(stack.gateway_url, conversation, 4)
    assert [(m["role"], m["status"]) for m in messages] == [
        ("user", "complete"),
        ("assistant", "complete"),
        ("user", "complete"),
        ("assistant", "complete"),
    ]
    assert messages[2]["content"] == "while memory is down"
    assert messages[3]["content"] == second.json()["message"]["content"]
