"""The end of a chaos run: the system has caught up when every durable consumer has taken
and acked all its stream holds. The audit reads the history and the ledger only then, so
an answer whose usage is still in the stream (usage killed last, not back yet) is not
counted lost; one that never reached the stream still is."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

import nats
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from contracts import subjects, topology
from contracts.events import UsageReported

__all__ = ["drained", "holds", "usage_reported_for"]

_DURABLES = (
    (topology.WORK_STREAM, topology.INFERENCE_CONSUMER),
    (topology.CHAT_STREAM, topology.MEMORY_CONSUMER),
    (topology.USAGE_STREAM, topology.USAGE_CONSUMER),
)


async def holds(urls: list[str], check: Callable[[JetStreamContext], Awaitable[bool]]) -> bool:
    """Whether `check` holds on the cluster at `urls` (False when it cannot be asked)."""
    try:
        nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=0)
    except Exception:
        return False
    try:
        return await check(nc.jetstream(timeout=2))
    except Exception:
        return False
    finally:
        await nc.close()


async def drained(urls: list[str]) -> bool:
    """Every request generated, every chat event stored, every usage report in the ledger
    (as far as their consumers' acks tell)."""
    if not urls:
        return True

    async def caught_up(js: JetStreamContext) -> bool:
        for stream, durable in _DURABLES:
            info = await js.consumer_info(stream, durable)
            if (info.num_pending or 0) or (info.num_ack_pending or 0):
                return False
        return True

    return await holds(urls, caught_up)


async def usage_reported_for(urls: list[str], reply_ids: Iterable[str]) -> set[str]:
    """Which of the replies have a usage report in the usage stream (for the audit's
    account of an answer missing from the ledger: never reported, or reported and not
    recorded)."""
    wanted = set(reply_ids)
    found: set[str] = set()
    if not wanted or not urls:
        return found
    nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=0)
    try:
        js = nc.jetstream(timeout=5)
        config = ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, mem_storage=True
        )
        sub = await js.pull_subscribe(
            subjects.USAGE_REPORTED_ALL, stream=topology.USAGE_STREAM, config=config
        )
        pending = (await sub.consumer_info()).num_pending or 0
        while pending > 0:
            for msg in await sub.fetch(batch=min(pending, 512), timeout=5):
                pending = msg.metadata.num_pending or 0
                try:
                    report = UsageReported.model_validate_json(msg.data)
                except ValidationError:
                    continue
                if report.message_id in wanted:
                    found.add(report.message_id)
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()
