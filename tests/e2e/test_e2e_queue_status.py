"""`status queued` when every worker is busy, through the whole system.

One worker with one slot and a slow demo model: while the first reply streams, the
worker holds the next request waiting for its slot and the later ones wait unfetched
in the work queue, where only the gateway can see them and tell their clients.
"""

from __future__ import annotations

import asyncio
from typing import Any

from apiclients import BackgroundSse
from stacks import until

SLOW_ONE_SLOT = {
    "LIVECHAT_MAX_CONCURRENCY": "1",
    "LIVECHAT_DEMO_TTFT_MS": "50",
    "LIVECHAT_DEMO_TOKENS_PER_SECOND": "20",
    "LIVECHAT_DEMO_MAX_TOKENS": "60",  # ~3 s per reply
    "LIVECHAT_ACK_WAIT_SECONDS": "10",
    "LIVECHAT_QUEUE_STATUS_INTERVAL_SECONDS": "0.5",
}


class Asked(BackgroundSse):
    """A message POSTed with SSE in the background; what its client saw in `events`."""

    def __init__(self, base_url: str, conversation_id: str) -> None:
        body = {"content": f"tell me about queues in {conversation_id}"}
        super().__init__(base_url, conversation_id, body, timeout=120)

    def kinds(self) -> list[str]:
        return [e["state"] if e["type"] == "status" else e["type"] for e in self.events]

    def positions(self) -> list[int]:
        return [e["position"] for e in self.events if e.get("state") == "queued"]


def _assert_queued_then_answered(asked: Asked) -> None:
    kinds = asked.kinds()
    assert kinds[-1] == "done", kinds
    start = kinds.index("start")
    assert "queued" in kinds[:start], kinds
    assert "queued" not in kinds[start:], kinds  # never a stale `queued` after `start`
    assert "token" in kinds[start:], kinds
    positions = asked.positions()
    assert positions == sorted(positions, reverse=True), positions  # only ever closer


async def test_requests_behind_busy_workers_are_told_their_position(
    make_stack: Any,
) -> None:
    stack = make_stack(**SLOW_ONE_SLOT)
    url = stack.gateway_url
    first = Asked(url, "queue-a")
    await until(lambda: "start" in first.kinds(), within=60)  # the only slot is taken
    # The worker fetches the next request and holds it for its slot; the two after it
    # stay unfetched until the first reply is done.
    asked = []
    for conversation in ("queue-b", "queue-c", "queue-d"):
        asked.append(Asked(url, conversation))
        await asyncio.wait_for(asked[-1].accepted.wait(), timeout=30)  # queued in this order
    second, third, fourth = asked
    await asyncio.wait_for(
        asyncio.gather(first.task, second.task, third.task, fourth.task), timeout=120
    )

    assert "queued" not in first.kinds() and first.kinds()[-1] == "done", first.kinds()
    for asked in (second, third, fourth):
        _assert_queued_then_answered(asked)
    # Ahead of the third: at most the second, if no worker had fetched it yet.
    assert third.positions()[0] <= 1, third.positions()
    # Ahead of the fourth: the third at least, unfetched until the first reply ends.
    assert fourth.positions()[0] >= 1, fourth.positions()
    # Its wait ended next in line: the worker took it while another reply ran.
    assert fourth.positions()[-1] == 0, fourth.positions()
    # Served in the order asked.
    starts = []
    for asked in (first, second, third, fourth):
        starts.append(next(e["event_id"] for e in asked.events if e["type"] == "start"))
    assert starts == sorted(starts), starts
