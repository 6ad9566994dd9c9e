"""Marking a conversation read: one behaviour behind the WebSocket `read` frame and
PUT /v1/conversations/{id}/read.

Memory stores the user's read position (it only moves forward); when it moved, the
conversation's other clients (other users', the user's other tabs: every gateway,
through NATS) get a `read` signal with the user and the message.
"""

from __future__ import annotations

from contracts import rpc
from contracts.signals import ReadSignal
from gateway.backends import answer_of
from gateway.errors import ApiError, no_such_conversation
from gateway.state import Gateway

__all__ = ["mark_read"]


async def mark_read(
    gateway: Gateway, user_id: str, conversation_id: str, message_id: str, *, client_id: str
) -> str:
    """The user's read position after reading `message_id` (it, or a later message read
    before); 404 for an unknown conversation or message. `client_id`: the connection
    the read came from (it is not told of its own read)."""
    request = rpc.ReadMarkRequest(
        user_id=user_id, conversation_id=conversation_id, message_id=message_id
    )
    reply = await answer_of("memory", gateway.backends.mark_read(request))
    if not reply.found:
        raise no_such_conversation()
    if reply.unknown_message or reply.message_id is None:
        raise ApiError(404, "not_found", f"no message {message_id!r} in this conversation")
    if reply.moved:
        signal = ReadSignal(
            conversation_id=conversation_id,
            user_id=user_id,
            client_id=client_id,
            message_id=reply.message_id,
        )
        await gateway.signals.publish(signal)  # live only: a lost one is read back by GET
    return reply.message_id
