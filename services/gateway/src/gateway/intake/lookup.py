"""A stored message of the caller's conversation, as the message tree needs one: the
parent a message names, the user message a regeneration answers again."""

from __future__ import annotations

from contracts import ids, rpc
from gateway.backends import answer_of
from gateway.errors import ApiError, no_such_conversation
from gateway.state import Gateway

__all__ = ["find_message"]


def _no_such_message(message_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no message {message_id!r} in this conversation")


async def find_message(
    gateway: Gateway, user_id: str, conversation_id: str, message_id: str
) -> rpc.StoredMessage:
    """The stored message `message_id` of the caller's conversation, else 404."""
    if not ids.is_valid_id(message_id):
        raise ApiError(404, "not_found", "no such message")
    reply = await answer_of(
        "memory",
        gateway.backends.get_conversation(user_id, conversation_id, message_ids=(message_id,)),
    )
    if reply.conversation is None:
        raise no_such_conversation()
    if not reply.messages:
        raise _no_such_message(message_id)
    return reply.messages[0]
