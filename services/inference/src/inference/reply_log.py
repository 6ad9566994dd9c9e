"""What earlier deliveries of a request already published in the events stream."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.js.api import DEFAULT_PREFIX, AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import APIError
from pydantic import ValidationError

from contracts import subjects, topology
from contracts.events import (
    CONVERSATION_EVENT,
    DoneEvent,
    ErrorEvent,
    ResyncEvent,
    StartEvent,
    StatusEvent,
    TokenEvent,
    ToolCallEvent,
    Usage,
)
from inference.outbox import BILLED_HEADER, TOKENS_HEADER

__all__ = ["ReplyLog", "read_reply_log"]

_BATCH = 512


@dataclass(frozen=True, slots=True)
class ReplyLog:
    started: bool = False
    finished: bool = False  # a done or error event is already out
    text: str = ""  # the tokens already streamed, joined
    tokens: int = 0
    # The delivery that streamed last, its last provider call (counted from 0 within
    # the delivery), and how many tokens that call streamed (for its usage).
    last_delivery: int = 0
    last_delivery_tokens: int = 0
    last_call: int = 0
    provider: str | None = None  # of that call
    # Deliveries that started generating it (those that waited for memory did not).
    attempts: int = 0
    # What its calls were billed so far, as the last status event told (`BILLED_HEADER`).
    billed: Usage | None = None
    # Tokens came before any start: the stream lost the reply's beginning (a NATS
    # restart recreated it mid-answer), so `text` is not the whole text streamed.
    gap: bool = False
    tool_calls: bool = False  # a piece of a function call is out: it cannot be continued
    # When the events stream was created (a NATS restart recreates it empty).
    stream_created: datetime | None = None
    # When the stream stored the reply's last event (the server's clock), if any.
    last_at: datetime | None = None
    # When it was read (the server's clock too; None: a server that does not tell).
    read_at: datetime | None = None

    def lost_since(self, moment: datetime) -> bool:
        """Nothing of the reply is in the events stream, which was created after `moment`:
        what was published of the reply before (a start, tokens) may be lost with the
        stream that a NATS restart replaced."""
        if self.started or self.tokens or self.tool_calls or self.stream_created is None:
            return False
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return self.stream_created > moment


async def read_reply_log(
    nc: Client, conversation_id: str, reply_id: str, *, fetch_timeout: float = 5.0
) -> ReplyLog:
    """Read the reply's events, up to the stream's last sequence at this moment."""
    js = nc.jetstream(timeout=fetch_timeout)
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE,
        deliver_policy=DeliverPolicy.ALL,
        inactive_threshold=60.0,
        mem_storage=True,
    )
    sub = await js.pull_subscribe(
        subjects.events(conversation_id), stream=topology.EVENTS_STREAM, config=config
    )
    started = finished = False
    parts: list[str] = []
    tokens = 0
    last_delivery = last_tokens = last_call = 0
    provider: str | None = None
    tool_calls = False
    consumer: str | None = None
    attempts = 0
    billed: Usage | None = None
    gap = whole = False
    created: datetime | None = None
    last_at: datetime | None = None
    read_at: datetime | None = None
    try:
        created, read_at = await _stream_times(nc, topology.EVENTS_STREAM, fetch_timeout)
        info = await sub.consumer_info()
        consumer, pending = info.name, info.num_pending or 0
        while pending > 0:
            for msg in await sub.fetch(batch=min(pending, _BATCH), timeout=fetch_timeout):
                pending = msg.metadata.num_pending or 0
                try:
                    event = CONVERSATION_EVENT.validate_json(msg.data)
                except ValidationError:
                    continue
                if getattr(event, "message_id", None) != reply_id:
                    continue
                if not isinstance(event, StatusEvent) or event.state != "queued":
                    # What a delivery answering it publishes; `queued` is published by
                    # a delivery waiting for a slot (this one's own, too).
                    last_at = msg.metadata.timestamp
                match event:
                    case StartEvent():
                        started, provider, whole = True, event.provider, True
                        last_delivery, last_tokens, last_call = 1, 0, 0
                        attempts += 1
                    case StatusEvent(state="generating", attempt=int() as delivery):
                        last_delivery = delivery  # started by a later delivery than the first
                    case StatusEvent(state="retrying", provider=None):  # a redelivery
                        last_delivery, last_tokens = event.attempt or last_delivery + 1, 0
                        last_call = 0
                        attempts += 1
                    case StatusEvent(state="retrying" | "provider_switched"):
                        # A further provider call of the same delivery; the calls before
                        # it reported their usage already.
                        provider = event.provider or provider
                        last_call, last_tokens = last_call + 1, 0
                    case ResyncEvent():
                        # The whole text so far: some token events before it were lost.
                        parts, whole = [event.content], True
                    case TokenEvent():
                        gap = gap or not whole
                        parts.append(event.content)
                        count = _token_count(msg.headers)
                        tokens += count
                        last_tokens += count
                    case ToolCallEvent():
                        tool_calls = True
                        count = _token_count(msg.headers)
                        tokens += count
                        last_tokens += count
                    case DoneEvent() | ErrorEvent():
                        finished = True
                if isinstance(event, StatusEvent | ResyncEvent):
                    billed = _billed(msg.headers) or billed
    finally:
        if consumer is not None:
            with contextlib.suppress(Exception):
                await js.delete_consumer(topology.EVENTS_STREAM, consumer)
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return ReplyLog(
        started=started,
        finished=finished,
        text="".join(parts),
        tokens=tokens,
        last_delivery=last_delivery,
        last_delivery_tokens=last_tokens,
        last_call=last_call,
        provider=provider,
        attempts=attempts,
        billed=billed,
        gap=gap,
        tool_calls=tool_calls,
        stream_created=created,
        last_at=last_at,
        read_at=read_at,
    )


async def _stream_times(
    nc: Client, stream: str, timeout: float
) -> tuple[datetime | None, datetime | None]:
    """When `stream` was created, and the server's time now (`ts`, nats-server 2.10+).

    JetStream's own answer to a stream info request: the client library's StreamInfo
    leaves the server's time out.
    """
    reply = await nc.request(f"{DEFAULT_PREFIX}.STREAM.INFO.{stream}", b"", timeout=timeout)
    info: dict[str, Any] = json.loads(reply.data)
    if "error" in info:
        APIError.from_error(info["error"])  # raises the error's own kind
    return _server_time(info.get("created")), _server_time(info.get("ts"))


def _server_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


def _billed(headers: dict[str, str] | None) -> Usage | None:
    """The bill a status event carries (see `BILLED_HEADER`), if any."""
    value = headers.get(BILLED_HEADER) if headers else None
    if value is None:
        return None
    try:
        prompt, completion = (max(int(part), 0) for part in value.split())
    except ValueError:
        return None
    return Usage.of(prompt, completion)


def _token_count(headers: dict[str, str] | None) -> int:
    """The provider tokens a `token` event joins (see `TOKENS_HEADER`)."""
    value = headers.get(TOKENS_HEADER) if headers else None
    if value is None:
        return 1
    try:
        return max(int(value), 1)
    except ValueError:
        return 1
