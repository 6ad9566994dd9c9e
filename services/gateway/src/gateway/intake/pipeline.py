"""The intake pipeline every protocol calls: a message's owner, repeated id and limits
(`admit`), then its publishing with the client's feed attached before (`accept`).

A protocol adapter parses its own input, calls `admit`, may answer a message
already answered without publishing, then calls `accept` and relays the reply
its own way (SSE, JSON, UI message stream, WebSocket frames).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.errors import Error as NatsError

from contracts import ids, rpc
from contracts.attachments import AttachmentRef
from gateway.errors import ApiError
from gateway.fanout.feed import EventFeed, attached
from gateway.fanout.replay import last_event
from gateway.fanout.reply import find_final, reply_filter
from gateway.intake.attachments import Checked, ImageIn, check_images, store_images
from gateway.intake.checks import check_message
from gateway.intake.limits import Limits
from gateway.intake.lookup import find_message
from gateway.intake.ownership import Grant
from gateway.intake.publisher import Submission
from gateway.schemas import MessageIn
from gateway.state import Gateway

__all__ = ["Admitted", "Earlier", "accept", "admit", "earlier_message", "user_message"]


@dataclass(frozen=True, slots=True)
class Earlier:
    """What memory holds of a message id a client sends again."""

    accepted: bool  # the user message is stored
    reply: rpc.StoredMessage | None  # its reply, when final

    @property
    def repeat(self) -> bool:
        """Sent before: not a new message (nor counted again by the rate limit)."""
        return self.accepted or self.reply is not None


async def earlier_message(
    gateway: Gateway, user_id: str, conversation_id: str, message_id: str
) -> Earlier:
    """Asked before publishing a client-given id: past the dedupe window a repeat is not
    deduplicated by NATS, and a reply already final must be answered, not generated."""
    reply_id = ids.reply_id(conversation_id, message_id)
    accepted, reply = await find_final(gateway, user_id, conversation_id, reply_id, message_id)
    return Earlier(accepted, reply)


@dataclass(frozen=True, slots=True)
class Admitted:
    """A message that passed the checks and may be published."""

    user_id: str
    conversation_id: str
    body: MessageIn
    model: str
    earlier: Earlier | None  # what memory holds of a client-given id
    allowance: int | None = None  # the budget's tokens left today (None: no budget)
    # What the caller may do there: the owner's account, whether the assistant answers.
    grant: Grant | None = None
    images: tuple[Checked, ...] = ()  # checked, stored when published

    @property
    def account(self) -> str:
        """Whose account the message is stored, answered and accounted under: the
        conversation's owner (a member writes into the owner's conversation)."""
        return self.user_id if self.grant is None else self.grant.owner_id

    @property
    def author_id(self) -> str | None:
        """Who wrote it, when not the owner."""
        return None if self.grant is None else self.grant.author(self.user_id)

    @property
    def answers(self) -> bool:
        """False: the assistant is off (a person took over), nothing is generated."""
        return self.grant is None or self.grant.assistant

    @property
    def answered(self) -> rpc.StoredMessage | None:
        """The final reply of a message sent before: answer it, generate nothing."""
        return None if self.earlier is None else self.earlier.reply


async def admit(
    gateway: Gateway,
    limits: Limits,
    user_id: str,
    conversation_id: str,
    body: MessageIn,
    *,
    reserve: Callable[[], None] | None = None,
    new_message: bool = True,
) -> Admitted:
    """The message's checks, then (`reserve`: a protocol's own check, e.g. a socket's room
    for one more conversation) its owner, its repeated id, and the caller's limits.
    `new_message=False`: an answer asked again for a stored message (a regeneration)."""
    model = check_message(body, gateway.settings)
    images = check_images(
        [ImageIn(a.media_type, a.data) for a in body.attachments],
        gateway.settings,
        model,
        max_payload=gateway.nc.max_payload,
    )
    if reserve is not None:
        reserve()
    earlier = None
    # Another user's: 404; a viewer's: 403. A member writes into the owner's account.
    grant = await gateway.owners.check(user_id, conversation_id)
    if not new_message and not grant.assistant:
        raise ApiError(
            409,
            "assistant_off",
            "the assistant is off in this conversation (a person took over): "
            "turn it on to regenerate",
        )
    if new_message:
        if body.id is not None:  # a repeat is answered once
            earlier = await earlier_message(gateway, user_id, conversation_id, body.id)
        if body.parent_id is not None:  # a branch starts at a message of this conversation
            await find_message(gateway, user_id, conversation_id, body.parent_id)
    allowance = None
    if earlier is None or not earlier.repeat:  # a retry is counted once
        # 429 before anything is published, on the account that pays for the answer.
        allowance = await limits.check(grant.owner_id)
    return Admitted(user_id, conversation_id, body, model, earlier, allowance, grant, images)


async def _publish(gateway: Gateway, message: Admitted) -> Submission:
    """Publish the message, unless memory shows it was accepted before: then the reply
    already given or being generated is followed."""
    conversation_id, body, model = message.conversation_id, message.body, message.model
    earlier = message.earlier
    account, author, answers = message.account, message.author_id, message.answers
    refs: tuple[AttachmentRef, ...] = ()
    if message.images:
        # Stored first (idempotent), named in the events (`contracts.attachments`).
        if body.id is None:
            body = body.model_copy(update={"id": ids.new_id()})
        refs = await store_images(gateway, account, conversation_id, body.id or "", message.images)
    if earlier is None or not earlier.repeat:
        return await gateway.publisher.submit(
            account,
            conversation_id,
            body,
            model,
            allowance=message.allowance,
            author_id=author,
            answer=answers,
            attachments=refs,
        )
    if not answers:  # stored before; nothing to answer while the assistant is off
        return await gateway.publisher.submit(
            account,
            conversation_id,
            body,
            model,
            accepted_before=True,
            answer=False,
            attachments=refs,
        )
    message_id = body.id or ""
    reply = ids.reply_id(conversation_id, message_id)
    repeat = Submission(conversation_id, message_id, reply, model, duplicate=True)
    if earlier.reply is not None:
        return repeat  # final: relayed from the stream, or from memory once aged out
    try:
        newest = await last_event(gateway.js, conversation_id)
    except (NatsError, TimeoutError):
        newest = None  # unknown: asking again is safe, the publishes are deduplicated
    if newest is not None and not newest.terminal and newest.message_id == reply:
        return repeat  # queued or being generated: follow it rather than ask for it twice
    # Stored but not (or no longer visibly) being answered: ask for the answer again.
    # Also when the message's own echo is the newest event: its generation request may
    # never have been queued (its publish failed after the message was stored), and
    # following it would wait for an answer nobody generates.
    return await gateway.publisher.submit(
        account,
        conversation_id,
        body,
        model,
        accepted_before=True,
        author_id=author,
        attachments=refs,
    )


async def accept(
    gateway: Gateway, message: Admitted, feed: EventFeed | None, *, replay: bool = True
) -> Submission:
    """Publish an admitted message, counted, with `feed` attached before (None: the caller
    follows the conversation already). `replay`: a message accepted before is relayed on
    `feed` from its reply's first event (else the caller relays it its own way)."""
    sub = await attached(feed, _publish(gateway, message))
    gateway.metrics.messages_accepted.labels(str(sub.duplicate).lower()).inc()
    if sub.duplicate and replay and feed is not None:
        # Already accepted: relay the generation that answers it, from its first event.
        feed.replay_after(0, reply_filter(sub.reply_id))
    return sub


def user_message(message: Admitted, sub: Submission) -> rpc.StoredMessage:
    """The user message `sub` published, as history shows it (the answer of a send while
    the assistant is off)."""
    return rpc.StoredMessage(
        id=sub.message_id,
        role="user",
        content=message.body.content,
        status="complete",
        created_at=sub.created_at or datetime.now(UTC),
        user_id=message.user_id,
        parent_id=message.body.parent_id,
    )
