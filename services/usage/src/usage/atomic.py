"""JetStream atomic batch publish (nats-server 2.12+, `allow_atomic` on the stream).

With `sync_interval: always` every stored message costs an fsync, a few thousand a
second on one disk. A batch is stored whole or not at all, with one: usage writes
its analytics entries and budget totals that way, a batch per pull.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import Sequence

from nats.aio.client import Client

__all__ = ["MAX_MESSAGES", "Message", "publish_batch"]

# nats-server's limit of messages in one atomic batch.
MAX_MESSAGES = 1000

# subject, payload, headers
Message = tuple[str, bytes, dict[str, str]]

# Unique among this process's batches, without a random read per batch.
_ids = (f"{uuid.uuid4().hex}.{n}" for n in itertools.count())


async def publish_batch(nc: Client, messages: Sequence[Message], *, timeout: float) -> int | None:
    """Publish `messages` (at most MAX_MESSAGES) as one atomic batch; the stream
    sequence of the last one once stored (they are stored in order, on consecutive
    sequences), else None: the batch was refused (as a whole), not sent whole, not
    answered in time, or stored message by message by a server without atomic
    batches. None leaves each message's fate unknown: the caller publishes them again
    in a way that a duplicate is harmless (a msg id, an expected last sequence)."""
    if not 0 < len(messages) <= MAX_MESSAGES:
        raise ValueError(f"an atomic batch holds 1 to {MAX_MESSAGES} messages")
    batch = next(_ids)
    last = len(messages)
    try:
        for number, (subject, payload, headers) in enumerate(messages, 1):
            marked = {**headers, "Nats-Batch-Id": batch, "Nats-Batch-Sequence": str(number)}
            if number < last:
                await nc.publish(subject, payload, headers=marked)
                continue
            marked["Nats-Batch-Commit"] = "1"
            reply = await nc.request(subject, payload, timeout=timeout, headers=marked)
        ack = json.loads(reply.data)
    except Exception:
        return None
    stored = (
        isinstance(ack, dict)
        and "error" not in ack
        and ack.get("batch") == batch
        and ack.get("count") == last
        and isinstance(ack.get("seq"), int)
    )
    return int(ack["seq"]) if stored else None
