"""JetStream streams and durable consumer names; every service ensures them at start."""

from __future__ import annotations

import dataclasses
import time

from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from contracts import subjects
from contracts.settings import LivechatSettings

__all__ = [
    "CHAT_STREAM",
    "EVENTS_STREAM",
    "INFERENCE_CONSUMER",
    "MEMORY_CONSUMER",
    "USAGE_CONSUMER",
    "USAGE_STREAM",
    "WORK_STREAM",
    "ensure_streams",
    "stream_configs",
]

CHAT_STREAM = "LIVECHAT_CHAT"
WORK_STREAM = "LIVECHAT_WORK"
EVENTS_STREAM = "LIVECHAT_EVENTS"
USAGE_STREAM = "LIVECHAT_USAGE"

# Durable consumers.
INFERENCE_CONSUMER = "inference"  # pull, shared by every worker
MEMORY_CONSUMER = "memory"
USAGE_CONSUMER = "usage"

_WEEK = 7 * 24 * 3600.0


def stream_configs(settings: LivechatSettings) -> list[StreamConfig]:
    dedupe = settings.dedupe_window_seconds
    return [
        StreamConfig(
            name=CHAT_STREAM,
            subjects=[subjects.CHAT_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=_WEEK,
            duplicate_window=dedupe,
        ),
        StreamConfig(
            name=WORK_STREAM,
            subjects=[subjects.GENERATE],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=_WEEK,
            duplicate_window=dedupe,
        ),
        # The replay buffer of conversation events. Memory storage on purpose:
        # it holds every token, it is bounded in age, and durable history lives
        # in SQL; with `sync_interval: always` a file stream stores ~1.7k
        # tokens/s here against ~75k/s in memory. Its sequence is the public
        # event id, so a stream recreated after a NATS restart starts above every
        # id it ever gave (see `events_first_seq`).
        StreamConfig(
            name=EVENTS_STREAM,
            first_seq=events_first_seq(),
            subjects=[subjects.EVENTS_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.MEMORY,
            max_age=settings.events_max_age_seconds,
            duplicate_window=min(dedupe, settings.events_max_age_seconds),
        ),
        StreamConfig(
            name=USAGE_STREAM,
            subjects=[subjects.USAGE_ALL],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=dedupe,
        ),
    ]


def events_first_seq(now: float | None = None) -> int:
    """The first sequence of a new events stream: milliseconds since the epoch x 1000.

    A stream created later starts above every sequence of an earlier one as long
    as it stored fewer than a million events per second on average, so event ids
    keep increasing across a NATS restart that lost the (memory) stream. It stays
    below 2**53, so JavaScript clients read it exactly.
    """
    return int((time.time() if now is None else now) * 1000) * 1000


async def ensure_streams(js: JetStreamContext, settings: LivechatSettings) -> None:
    """Create the streams, or update them to this configuration (idempotent)."""
    for config in stream_configs(settings):
        try:
            await js.add_stream(config)
        except BadRequestError:
            # The first sequence is set at creation only.
            await js.update_stream(dataclasses.replace(config, first_seq=None))
