"""Accepting a message over any route: new, or a repeat of a client-given id."""

from __future__ import annotations

from nats.errors import Error as NatsError

from contracts.ids import reply_id
from gateway.fanout.replay import last_event
from gateway.fanout.resume import in_flight
from gateway.intake.chat import Submission
from gateway.protocols.rest.relay import Earlier
from gateway.schemas import MessageIn
from gateway.state import Gateway

__all__ = ["accept_message"]


async def accept_message(
    gateway: Gateway,
    user_id: str,
    conversation_id: str,
    body: MessageIn,
    model: str,
    earlier: Earlier | None,
) -> Submission:
    """Publish the message, unless `earlier` (what memory holds of its id) shows it was
    accepted before: then the reply already given or being generated is followed."""
    if earlier is None or not (earlier.accepted or earlier.reply is not None):
        return await gateway.chat.submit(user_id, conversation_id, body, model)
    message_id = body.id or ""
    reply = reply_id(conversation_id, message_id)
    repeat = Submission(conversation_id, message_id, reply, model, duplicate=True)
    if earlier.reply is not None:
        return repeat  # final: relayed from the stream, or from memory once aged out
    try:
        newest = await last_event(gateway.js, conversation_id)
    except (NatsError, TimeoutError):
        newest = None  # unknown: asking again is safe, the publishes are deduplicated
    if in_flight(conversation_id, newest) == reply:
        return repeat  # being generated: follow it rather than ask for it twice
    # Stored but not (or no longer visibly) being answered: ask for the answer again.
    return await gateway.chat.submit(user_id, conversation_id, body, model, accepted_before=True)
