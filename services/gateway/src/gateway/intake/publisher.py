"""The gateway's one publisher of a message and of generation requests (JetStream).

A message is echoed, stored and answered (three publishes); a regeneration or a
stateless completion comes with no new user message, so only its generation
request is published, to the same workers and the same usage ledger.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import PubAck
from pydantic import BaseModel

from contracts import ids, subjects, topology
from contracts.attachments import AttachmentRef
from contracts.events import (
    GenerationOptions,
    GenerationRequested,
    MessageEvent,
    UserMessageAccepted,
)
from gateway.errors import ApiError
from gateway.intake.inflight import InFlight
from gateway.intake.queue_status import QueueStatus
from gateway.ops.tracing import trace_headers
from gateway.schemas import MessageIn

__all__ = ["Publisher", "Submission"]

log = logging.getLogger(__name__)

# The streams that refuse a publish when full (contracts.topology): what a publish that
# failed is checked against, to tell a full store from one that did not answer.
_REFUSING_WHEN_FULL = (topology.CHAT_STREAM, topology.WORK_STREAM)
_FULL_CHECK_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Submission:
    conversation_id: str
    message_id: str
    reply_id: str
    model: str
    duplicate: bool  # the message id was already accepted: do not answer twice
    # The assistant was off: the message was stored and relayed, and is not answered.
    unanswered: bool = False
    created_at: datetime | None = None  # the user message's time, when published now


class Publisher:
    def __init__(
        self,
        js: JetStreamContext,
        *,
        timeout: float,
        queue: QueueStatus | None = None,
        in_flight: InFlight | None = None,
        reserve_tokens: int = 4096,
    ) -> None:
        self._js = js
        self._timeout = timeout
        self._queue = queue  # tells the clients of a request no worker took yet
        # Counts each user's unfinished generations: 429 beyond the limit.
        self._in_flight = in_flight
        # Reserved from the daily budget for a reply that names no max_tokens.
        self._reserve_tokens = reserve_tokens

    async def _publish_counted(
        self,
        publishes: list[tuple[str, BaseModel, str]],
        request: GenerationRequested,
        allowance: int | None,
    ) -> list[PubAck]:
        """`_publish_all`, the generation counted for its user first, its tokens reserved
        (refused beyond the limits); not counted when it was requested before (a
        deduplicated repeat)."""
        in_flight = self._in_flight
        reply_id = request.message_id
        counted = in_flight is not None and in_flight.acquire(
            request.user_id,
            request.conversation_id,
            reply_id,
            tokens=request.options.max_tokens or self._reserve_tokens,
            allowance=allowance,
        )
        try:
            acks = await self._publish_all(publishes)
        except BaseException:
            if counted and in_flight is not None:
                in_flight.release(reply_id)
            raise
        if counted and in_flight is not None and acks[-1].duplicate:
            in_flight.release(reply_id)  # requested before: counted where it was then
        return acks

    async def _publish_all(self, publishes: list[tuple[str, BaseModel, str]]) -> list[PubAck]:
        """Publish in order on the one connection, the last one (the generation request)
        once the others are stored: in a cluster each stream has its own leader, and a
        request queued while its message failed to be stored would be answered without
        it. The others are acked together: one round trip (and one wait for the
        stores' fsync) instead of one each."""
        acks: list[asyncio.Future[PubAck]] = []
        try:
            # One deadline for the lot. No `wait_stall`: nats-py waits for it with
            # `asyncio.wait_for`, a task per call that yields to the loop, so the
            # client's flusher wrote each message on its own and the generation
            # request reached the server milliseconds after the echo.
            async with asyncio.timeout(self._timeout):
                for number, (subject, event, msg_id) in enumerate(publishes, 1):
                    if number == len(publishes) and acks:
                        await asyncio.gather(*acks)
                    # Each call queues its message on the connection before returning:
                    # the server receives them in this order.
                    ack = await self._js.publish_async(
                        subject,
                        event.model_dump_json().encode(),
                        headers=trace_headers({"Nats-Msg-Id": msg_id}),  # worker spans join ours
                    )
                    acks.append(ack)
                return await asyncio.gather(*acks)
        finally:
            for ack in acks:
                ack.cancel()  # no-op once done; else frees its slot (no ack ever came)

    async def full_stream(self, largest: int) -> str | None:
        """The stream that cannot take a message of `largest` bytes, if one is full.
        Asked after a publish failed (nats-py does not hand an async publish's error
        back: the publish times out). Briefly: a NATS that does not answer is no full one."""
        try:
            async with asyncio.timeout(min(self._timeout, _FULL_CHECK_SECONDS)):
                for name in _REFUSING_WHEN_FULL:
                    info = await self._js.stream_info(name)
                    limit = info.config.max_bytes
                    if limit is not None and limit > 0 and info.state.bytes + largest > limit:
                        return name
        except (NatsError, TimeoutError):
            pass
        return None

    async def _refusal(
        self, publishes: list[tuple[str, BaseModel, str]], what: str, details: dict[str, str]
    ) -> ApiError:
        largest = max(len(event.model_dump_json()) for _, event, _ in publishes) + 512
        full = await self.full_stream(largest)
        headers = {"X-Message-Id": details["message_id"]} if details else None
        if full is not None:
            log.error("stream %s is full (LIVECHAT_STREAM_MAX_BYTES)", full)
            return ApiError(
                503,
                "storage_full",
                f"{what} could not be queued: the message store is full; retry later "
                "(the operator raises LIVECHAT_STREAM_MAX_BYTES or frees space)",
                retryable=True,
                headers=headers,
                details=details,
            )
        retry = "; retry with the same message id" if details else "; retry"
        return ApiError(
            503,
            "service_unavailable",
            f"{what} could not be queued{retry}",
            retryable=True,
            headers=headers,
            details=details,
        )

    async def submit(
        self,
        user_id: str,
        conversation_id: str,
        body: MessageIn,
        model: str,
        *,
        accepted_before: bool = False,
        allowance: int | None = None,
        author_id: str | None = None,
        answer: bool = True,
        attachments: tuple[AttachmentRef, ...] = (),
    ) -> Submission:
        """Publish the message; `accepted_before`: memory already holds it (a retry after
        the dedupe window), so only the generation request is published again.
        `user_id` is the conversation's owner (the account), `author_id` who wrote it when
        someone else (a member); `answer=False`: the assistant is off, nothing is generated.
        `attachments`: its images, stored already."""
        message_id = body.id or ids.new_id()
        reply = ids.reply_id(conversation_id, message_id)
        if accepted_before and not answer:
            return Submission(conversation_id, message_id, reply, model, True, unanswered=True)
        now = datetime.now(UTC)
        echo = MessageEvent(
            message_id=message_id,
            content=body.content,
            created_at=now,
            user_id=author_id or user_id,
            unanswered=not answer,
            attachments=attachments,
        )
        accepted = UserMessageAccepted(
            message_id=message_id,
            conversation_id=conversation_id,
            user_id=user_id,
            content=body.content,
            created_at=now,
            system_prompt=body.system_prompt,
            parent_id=body.parent_id,
            root=body.root,
            author_id=author_id,
            attachments=attachments,
        )
        requested = GenerationRequested(
            message_id=reply,
            conversation_id=conversation_id,
            user_id=user_id,
            user_message_id=message_id,
            content=body.content,
            options=GenerationOptions(
                model=model,
                system_prompt=body.system_prompt,
                max_tokens=body.max_tokens,
                temperature=body.temperature,
            ),
            requested_at=now,
            parent_id=body.parent_id,
            root=body.root,
            attachments=attachments,
        )

        def dedupe_id(kind: str) -> str:
            return ids.msg_id(kind, conversation_id, message_id)

        publishes: list[tuple[str, BaseModel, str]] = []
        if not accepted_before:
            publishes.append((subjects.events(conversation_id), echo, dedupe_id("echo")))
            publishes.append((subjects.chat_user(conversation_id), accepted, dedupe_id("user")))
        if not answer:
            return await self._publish_unanswered(publishes, conversation_id, message_id, model)
        publishes.append((subjects.GENERATE, requested, dedupe_id("gen")))
        # Sent in this order: the echo is shown, then the message is stored, then it is
        # answered. A repeated message id is republished (each publish is deduped by its
        # Nats-Msg-Id) so that a request of which a publish failed is completed by the
        # client's retry.
        try:
            acks = await self._publish_counted(publishes, requested, allowance)
        except (NatsError, TimeoutError) as exc:
            log.warning("publishing a message failed: %s", type(exc).__name__)
            details = {"message_id": message_id}
            raise await self._refusal(publishes, "the message", details) from exc
        request = acks[-1]  # the last publish: the generation request
        duplicate = bool(request.duplicate) or accepted_before
        if self._queue is not None:
            self._queue.track(conversation_id, reply, request.seq)
        return Submission(conversation_id, message_id, reply, model, duplicate, created_at=now)

    async def _publish_unanswered(
        self,
        publishes: list[tuple[str, BaseModel, str]],
        conversation_id: str,
        message_id: str,
        model: str,
    ) -> Submission:
        """The echo and the stored message alone: the assistant is off."""
        try:
            acks = await self._publish_all(publishes)
        except (NatsError, TimeoutError) as exc:
            log.warning("publishing a message failed: %s", type(exc).__name__)
            details = {"message_id": message_id}
            raise await self._refusal(publishes, "the message", details) from exc
        reply = ids.reply_id(conversation_id, message_id)
        duplicate = bool(acks[-1].duplicate)
        accepted = publishes[-1][1]
        assert isinstance(accepted, UserMessageAccepted)
        return Submission(
            conversation_id,
            message_id,
            reply,
            model,
            duplicate,
            unanswered=True,
            created_at=accepted.created_at,
        )

    async def request_generation(
        self,
        request: GenerationRequested,
        *,
        kind: str,
        allowance: int | None = None,
        announce_queue: bool = True,
    ) -> bool:
        """Queue a generation request alone (deduped per reply, `kind`: "gen" or "regen");
        True when it was queued before. `announce_queue=False`: no `status queued` while
        it waits for a worker (its client's protocol has no place for one)."""
        msg_id = ids.msg_id(kind, request.conversation_id, request.message_id)
        publishes: list[tuple[str, BaseModel, str]] = [(subjects.GENERATE, request, msg_id)]
        try:
            (ack,) = await self._publish_counted(publishes, request, allowance)
        except (NatsError, TimeoutError) as exc:
            log.warning("publishing a generation request failed: %s", type(exc).__name__)
            raise await self._refusal(publishes, "the request", {}) from exc
        if self._queue is not None and announce_queue:
            self._queue.track(request.conversation_id, request.message_id, ack.seq)
        return bool(ack.duplicate)
