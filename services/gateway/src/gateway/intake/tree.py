"""Regenerations: another answer to a stored user message, a sibling of the earlier."""

from __future__ import annotations

from datetime import UTC, datetime

from contracts import ids, rpc
from contracts.events import GenerationOptions, GenerationRequested
from gateway.errors import ApiError
from gateway.intake.lookup import find_message
from gateway.intake.pipeline import Admitted
from gateway.intake.publisher import Submission
from gateway.state import Gateway

__all__ = ["regenerate", "user_message"]


async def user_message(
    gateway: Gateway, user_id: str, conversation_id: str, message_id: str
) -> rpc.StoredMessage:
    """The stored user message a regeneration answers again (404, or 422 for a reply)."""
    message = await find_message(gateway, user_id, conversation_id, message_id)
    if message.role != "user":
        raise ApiError(
            422,
            "not_a_user_message",
            f"message {message_id!r} is an answer: regenerate the user message it answers "
            f"(its parent_id, {message.parent_id!r})",
        )
    return message


async def regenerate(
    gateway: Gateway, message: Admitted, question: rpc.StoredMessage
) -> Submission:
    """Ask for another answer to the stored user message `question`: a new reply, a
    sibling of the earlier ones, generated and accounted as any other."""
    conversation_id, body = message.conversation_id, message.body
    # A fresh reply id: the reply to a user message is otherwise answered once.
    reply = ids.reply_id(conversation_id, f"{question.id}/regenerate/{ids.new_id()}")
    request = GenerationRequested(
        message_id=reply,
        conversation_id=conversation_id,
        user_id=message.account,
        user_message_id=question.id,
        content=question.content,
        options=GenerationOptions(
            model=message.model,
            system_prompt=body.system_prompt,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
        ),
        requested_at=datetime.now(UTC),
        parent_id=question.parent_id,
        root=question.parent_id is None,
        regenerated=True,
    )
    await gateway.publisher.request_generation(request, kind="regen", allowance=message.allowance)
    return Submission(conversation_id, question.id, reply, message.model, duplicate=False)
