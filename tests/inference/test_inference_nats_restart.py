"""NATS restarted in the middle of an answer: the events stream (memory) is recreated
empty, and token events sent meanwhile may be lost. What a client joins (tokens, then
the `resync` event's whole text) is still exactly the stored answer, also when the
worker dies (before or after the restart) and another one takes the reply over."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from contracts import subjects
from contracts.events import CONVERSATION_EVENT, ResyncEvent, TokenEvent


def _joined(events: list[Any]) -> str:
    parts: list[str] = []
    for event in events:
        if isinstance(event, TokenEvent):
            parts.append(event.content)
        elif isinstance(event, ResyncEvent):
            parts = [event.content]
    return "".join(parts)


@pytest.mark.parametrize("crash_first", [False, True], ids=["restart-crash", "crash-restart"])
async def test_a_nats_restart_and_a_worker_crash_mid_answer_still_end_as_stored(
    crash_first: bool,
    settings: Any,
    memory: Any,
    nc: Any,
    bus: Any,
    make_request: Any,
    start_worker: Any,
    spawn_worker: Any,
    nats_server: Any,
) -> None:
    settings = settings.model_copy(
        update={"ack_wait_seconds": 2.0, "heartbeat_seconds": 0.5, "demo_max_tokens": 60}
    )
    seen: list[Any] = []  # every event as a client following the conversation got it

    async def on_event(msg: Any) -> None:
        seen.append(CONVERSATION_EVENT.validate_json(msg.data))

    def tokens() -> int:
        return sum(isinstance(e, TokenEvent) for e in seen)

    async def until_tokens(count: int) -> None:
        for _ in range(1200):
            if tokens() >= count or slow.poll() is not None:
                return
            await asyncio.sleep(0.05)

    def kill(worker: Any) -> None:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    async def restart() -> None:
        await asyncio.to_thread(nats_server.stop)
        await asyncio.to_thread(nats_server.start)

    request = make_request("Explain how lighthouses were kept burning through the night")
    await nc.subscribe(subjects.events(request.conversation_id), cb=on_event)
    slow = spawn_worker(
        settings,
        LIVECHAT_DEMO_TTFT_MS="0",
        LIVECHAT_DEMO_TOKENS_PER_SECOND="10",
        LIVECHAT_TOKEN_COALESCE_MS="0",
    )
    try:
        await bus.publish(request)
        await until_tokens(4)
        if crash_first:
            # The restart then loses every event of the reply: the next worker finds
            # none, not even its start.
            kill(slow)
            await restart()
        else:
            await restart()
            # Tokens flow again (lost if sent before the stream is recreated), and the
            # worker dies mid-answer. Meanwhile the request may be redelivered to it.
            before = tokens()
            await until_tokens(before + 4)
            assert slow.poll() is None, slow.stderr.read() if slow.stderr else ""
            assert tokens() >= before + 4
            kill(slow)
    finally:
        if slow.poll() is None:
            kill(slow)

    await start_worker(settings)
    await bus.wait_ended(request, within=60)

    mine = [e for e in seen if getattr(e, "message_id", None) == request.message_id]
    assert [e.type for e in mine].count("done") == 1
    assert [e.type for e in mine].count("start") == 1
    assert any(isinstance(e, ResyncEvent) for e in mine)
    [finished] = await bus.finished(request)
    assert finished.status == "complete"
    assert _joined(mine) == finished.content
