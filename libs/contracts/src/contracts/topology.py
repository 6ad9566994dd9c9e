"""JetStream streams and durable consumer names; each service ensures its own at start."""

from __future__ import annotations

import base64
import dataclasses
import time
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from contracts import subjects
from contracts.settings import LivechatSettings

__all__ = [
    "ALL_STREAMS",
    "BUDGET_BUCKET",
    "CANCEL_BUCKET",
    "CHAT_STREAM",
    "EVENTS_LEADER_ELECTED",
    "EVENTS_STREAM",
    "FEEDBACK_STREAM",
    "GATEWAY_STREAMS",
    "INFERENCE_CONSUMER",
    "INFERENCE_STREAMS",
    "MEMORY_CONSUMER",
    "MEMORY_STREAMS",
    "RATE_BUCKET",
    "USAGE_CONSUMER",
    "USAGE_STREAM",
    "USAGE_STREAMS",
    "WORK_STREAM",
    "StreamRights",
    "bucket_configs",
    "budget_key",
    "cancel_key",
    "ensure_buckets",
    "ensure_streams",
    "rate_key",
    "stream_configs",
]

CHAT_STREAM = "LIVECHAT_CHAT"
WORK_STREAM = "LIVECHAT_WORK"
EVENTS_STREAM = "LIVECHAT_EVENTS"
USAGE_STREAM = "LIVECHAT_USAGE"
FEEDBACK_STREAM = "LIVECHAT_FEEDBACK"

# JetStream's advisory that the events stream has a new leader: its replicas elected one
# after the node leading it was lost (or it stepped down). Core publishes to the stream
# made while it had none were dropped without a word.
EVENTS_LEADER_ELECTED = f"$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED.{EVENTS_STREAM}"

# Durable consumers.
INFERENCE_CONSUMER = "inference"  # pull, shared by every worker
MEMORY_CONSUMER = "memory"
USAGE_CONSUMER = "usage"

_WEEK = 7 * 24 * 3600.0

# JetStream key-value buckets shared by every gateway instance (limits).
# Messages per user per minute: key `<user key>.<epoch minute>`, an integer.
RATE_BUCKET = "LIVECHAT_RATE"
# Tokens spent per user per UTC day, written by usage from its ledger:
# key `<user key>.<YYYY-MM-DD>`, an integer.
BUDGET_BUCKET = "LIVECHAT_BUDGET"
# Stop buttons pressed (events.CancelRequested), for requests still queued or
# redelivered when they were pressed: key `<conversation>.<user key>`.
CANCEL_BUCKET = "LIVECHAT_CANCEL"


def stream_configs(settings: LivechatSettings) -> list[StreamConfig]:
    dedupe = settings.dedupe_window_seconds

    def stream(name: str, subject: str, **options: Any) -> StreamConfig:
        # File storage, kept by limits, deduplicated over the window, unless told otherwise;
        # on as many cluster nodes as LIVECHAT_NATS_REPLICAS says.
        defaults: dict[str, Any] = {
            "retention": RetentionPolicy.LIMITS,
            "storage": StorageType.FILE,
            "duplicate_window": dedupe,
            "num_replicas": settings.nats_replicas,
        }
        return StreamConfig(name=name, subjects=[subject], **{**defaults, **options})

    # On disk, bounded in bytes: a full chat or work stream refuses a publish (what is in
    # it may not be consumed yet); the usage stream drops its oldest (analytics only).
    on_disk = settings.stream_max_bytes or -1
    refuse_when_full = {"max_bytes": on_disk, "discard": DiscardPolicy.NEW}
    return [
        stream(CHAT_STREAM, subjects.CHAT_ALL, max_age=_WEEK, **refuse_when_full),
        stream(
            WORK_STREAM,
            subjects.GENERATE,
            retention=RetentionPolicy.WORK_QUEUE,
            max_age=_WEEK,
            **refuse_when_full,
        ),
        # The replay buffer of conversation events. Memory storage on purpose:
        # it holds every token, it is bounded in age, and durable history lives
        # in SQL; with `sync_interval: always` a file stream stores ~1.7k
        # tokens/s here against ~75k/s in memory. Its sequence is the public
        # event id, so a stream recreated after a NATS restart starts above every
        # id it ever gave (see `events_first_seq`). Bounded in bytes too (reserved in
        # nats-server's memory, so the in-memory rate bucket keeps its share) and per
        # conversation; the oldest events go first, a publish is never refused.
        stream(
            EVENTS_STREAM,
            subjects.EVENTS_ALL,
            first_seq=events_first_seq(),
            storage=StorageType.MEMORY,
            max_age=settings.events_max_age_seconds,
            max_bytes=settings.events_max_bytes,
            max_msgs_per_subject=settings.events_max_per_conversation,
            discard=DiscardPolicy.OLD,
            duplicate_window=min(dedupe, settings.events_max_age_seconds),
        ),
        # Usage republishes a batch's ledger entries as one atomic batch: one
        # fsync for all (nats-server 2.12+; an older one ignores it).
        stream(
            USAGE_STREAM,
            subjects.USAGE_ALL,
            allow_atomic=True,
            max_bytes=on_disk,
            discard=DiscardPolicy.OLD,
        ),
        # Feedback changes for analytics, published by memory after each commit (a
        # replayable copy: the feedback itself lives in memory's SQL).
        stream(
            FEEDBACK_STREAM, subjects.FEEDBACK_ALL, max_bytes=on_disk, discard=DiscardPolicy.OLD
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


@dataclasses.dataclass(frozen=True, slots=True)
class StreamRights:
    """The streams a service keeps configured (`own`: created and updated to its
    configuration) and those it only needs to exist (`need`: created when missing,
    never updated). deploy/nats/auth.conf grants each service user exactly these."""

    own: tuple[str, ...]
    need: tuple[str, ...] = ()


# The events stream is memory storage, lost when nats-server restarts: both services
# that publish into it recreate it at once. Each file stream has one owner, the
# service that consumes it; the others that publish into it only create it missing.
GATEWAY_STREAMS = StreamRights(own=(EVENTS_STREAM,), need=(CHAT_STREAM, WORK_STREAM))
INFERENCE_STREAMS = StreamRights(own=(EVENTS_STREAM, WORK_STREAM), need=(CHAT_STREAM, USAGE_STREAM))
MEMORY_STREAMS = StreamRights(own=(CHAT_STREAM, FEEDBACK_STREAM), need=(EVENTS_STREAM,))
USAGE_STREAMS = StreamRights(own=(USAGE_STREAM,))
ALL_STREAMS = StreamRights(
    own=(CHAT_STREAM, WORK_STREAM, EVENTS_STREAM, USAGE_STREAM, FEEDBACK_STREAM)
)

# JetStream's answer to a create of an existing stream with another configuration.
_STREAM_NAME_IN_USE = 10058


async def ensure_streams(
    js: JetStreamContext, settings: LivechatSettings, rights: StreamRights = ALL_STREAMS
) -> None:
    """Create the streams of `rights`, updating the owned ones to this configuration
    (idempotent). The default, every stream owned, is for tests and tools."""
    for config in stream_configs(settings):
        if config.name in rights.own:
            try:
                await js.add_stream(config)
            except BadRequestError:
                # The first sequence is set at creation only.
                await js.update_stream(dataclasses.replace(config, first_seq=None))
        elif config.name in rights.need:
            try:
                await js.add_stream(config)
            except BadRequestError as exc:
                # Kept as its owner configured it.
                if exc.err_code != _STREAM_NAME_IN_USE:
                    raise


def bucket_configs(replicas: int = 1) -> list[KeyValueConfig]:
    """The buckets, each on `replicas` cluster nodes (LIVECHAT_NATS_REPLICAS)."""
    return [
        # A minute's counter is only read during that minute.
        KeyValueConfig(
            bucket=RATE_BUCKET, ttl=180.0, storage=StorageType.MEMORY, replicas=replicas
        ),
        # A day's total is read during that day; kept two days for the day boundary.
        KeyValueConfig(
            bucket=BUDGET_BUCKET, ttl=2 * 24 * 3600.0, storage=StorageType.FILE, replicas=replicas
        ),
        # Read when a worker takes a request: a day covers any queue a user waits out.
        KeyValueConfig(
            bucket=CANCEL_BUCKET, ttl=24 * 3600.0, storage=StorageType.FILE, replicas=replicas
        ),
    ]


async def ensure_buckets(js: JetStreamContext, replicas: int = 1) -> None:
    """Create the key-value buckets on `replicas` nodes (idempotent: an existing bucket
    is kept as it is)."""
    for config in bucket_configs(replicas):
        try:
            await js.create_key_value(config)
        except BadRequestError:
            await js.key_value(config.bucket)  # exists with another configuration


def _user_key(user_id: str) -> str:
    # Any user id becomes a valid key token ([A-Za-z0-9_-]).
    return base64.urlsafe_b64encode(user_id.encode()).decode().rstrip("=")


def rate_key(user_id: str, epoch_minute: int) -> str:
    return f"{_user_key(user_id)}.{epoch_minute}"


def cancel_key(conversation_id: str, user_id: str) -> str:
    return f"{conversation_id}.{_user_key(user_id)}"


def budget_key(user_id: str, day: str) -> str:
    """`day` is the UTC date as YYYY-MM-DD."""
    return f"{_user_key(user_id)}.{day}"
