"""A worker killed mid-generation: another one finishes the same reply, seamlessly."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from contracts import ids, subjects
from contracts.events import CONVERSATION_EVENT, DoneEvent, StatusEvent, TokenEvent, Usage
from contracts.rpc import Pong
from inference.providers.demo import demo_answer


async def test_killed_worker_is_replaced_without_duplicated_or_missing_tokens(
    settings: Any,
    memory: Any,
    nc: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    spawn_worker: Any,
) -> None:
    # One token event per provider token: the usage is checked against their count.
    settings = settings.model_copy(
        update={
            "ack_wait_seconds": 2.0,
            "heartbeat_seconds": 0.5,
            "demo_max_tokens": 40,
            "token_coalesce_ms": 0,
        }
    )
    seen: list[str] = []

    async def on_event(msg: Any) -> None:
        seen.append(CONVERSATION_EVENT.validate_json(msg.data).type)

    request = make_request("Explain how JetStream redelivers unacknowledged messages")
    await nc.subscribe(subjects.events(request.conversation_id), cb=on_event)
    slow = spawn_worker(
        settings,
        LIVECHAT_DEMO_TTFT_MS="0",
        LIVECHAT_DEMO_TOKENS_PER_SECOND="10",
        LIVECHAT_TOKEN_COALESCE_MS="0",
    )
    try:
        await bus.publish(request)
        for _ in range(600):
            if seen.count("token") >= 4 or slow.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert slow.poll() is None, slow.stderr.read() if slow.stderr else ""
        assert seen.count("token") >= 4
        slow.send_signal(signal.SIGKILL)
        slow.wait()
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()

    await start_worker(settings)
    await bus.wait_ended(request, within=60)

    events = await bus.events(request)
    names = [e.type for e in events]
    assert names.count("start") == 1 and names.count("done") == 1 and "error" not in names
    retrying = [e for e in events if isinstance(e, StatusEvent) and e.state == "retrying"]
    assert len(retrying) == 1 and retrying[0].attempt == 2
    tokens = "".join(e.content for e in events if isinstance(e, TokenEvent))
    # Exactly the uninterrupted answer: nothing repeated, nothing skipped.
    assert tokens == "".join(demo_answer(request.content, 40))
    [finished] = await bus.finished(request)
    assert finished.content == tokens
    usage = {u.outcome: u for u in await bus.usage(request)}
    assert set(usage) == {"interrupted", "completed"}
    assert usage["interrupted"].attempt_id == ids.attempt_id(request.message_id, 1, 0)
    assert usage["completed"].attempt_id == ids.attempt_id(request.message_id, 2, 0)
    streamed = sum(u.usage.completion_tokens for u in usage.values())
    assert streamed == len([e for e in events if isinstance(e, TokenEvent)])
    # What the answer shows is what it is billed: both attempts, each once.
    billed = Usage.of(
        sum(u.usage.prompt_tokens for u in usage.values()),
        sum(u.usage.completion_tokens for u in usage.values()),
    )
    assert usage["interrupted"].usage.prompt_tokens > 0
    [done] = [e for e in events if isinstance(e, DoneEvent)]
    assert done.usage == billed
    assert finished.usage == billed


async def test_python_m_inference_answers_ping_and_exits_cleanly_on_sigterm(
    settings: Any, nc: Any, spawn_worker: Any
) -> None:
    worker = spawn_worker(settings)
    try:
        pong = None
        for _ in range(200):
            try:
                reply = await nc.request(subjects.ping("inference"), b"", timeout=0.5)
                pong = Pong.model_validate_json(reply.data)
                break
            except Exception:
                await asyncio.sleep(0.1)
        assert pong == Pong(service="inference")
        worker.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.wait, 30)
        assert code == 0, worker.stderr.read() if worker.stderr else ""
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
