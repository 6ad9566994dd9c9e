"""Conversations, kept by the memory service (usage: protocols/rest/usage.py).

Every call names the caller: another user's conversation is "not found".
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field, field_validator

from contracts import ids, rpc
from gateway.access.auth import current_user
from gateway.backends import answer_of, found
from gateway.errors import ApiError, no_such_conversation
from gateway.fanout.access import announce_access_change
from gateway.intake.attachments import with_images
from gateway.intake.body import body_schema, read_model
from gateway.intake.cancel import cancel_generation
from gateway.intake.checks import check_conversation_id
from gateway.intake.read_state import mark_read
from gateway.openapi import API_ERRORS, BODY_ERRORS, error_responses
from gateway.schemas import (
    ConversationList,
    ConversationOut,
    ConversationPage,
    ReadIn,
    ReadOut,
    Strict,
    public,
)
from gateway.state import gateway_of

__all__ = ["ConversationCreateIn", "ConversationUpdateIn", "router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

DEFAULT_PAGE = 200  # messages of GET /v1/conversations/{id} without `limit`

User = Annotated[str, Depends(current_user)]
Cursor = Annotated[str | None, Query(pattern=ids.ID_PATTERN)]


class _ConversationFields(Strict):
    title: str | None = Field(default=None, max_length=rpc.TITLE_MAX_CHARS)
    system_prompt: str | None = Field(default=None, max_length=rpc.SYSTEM_PROMPT_MAX_CHARS)

    @field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str | None:
        if value is None:
            return None
        title = " ".join(value.split())
        if not title:
            raise ValueError("must not be empty")
        return title


class ConversationCreateIn(_ConversationFields):
    """The body of POST /v1/conversations: both fields optional."""


class ConversationUpdateIn(_ConversationFields):
    """The body of PATCH /v1/conversations/{id}: the fields to change (an empty
    system prompt removes it; `active_message_id` switches to the branch ending at, or
    going through, that message)."""

    active_message_id: Annotated[str, Field(pattern=ids.ID_PATTERN)] | None = None
    # "off": a person takes over (messages are stored and relayed, not answered); "on":
    # the assistant answers the next message again. The owner's or a member's.
    assistant: Literal["on", "off"] | None = None


def _conversation(summary: rpc.ConversationSummary) -> dict[str, Any]:
    return public(summary)


@router.post(
    "/v1/conversations",
    status_code=201,
    response_model=ConversationOut,
    response_model_exclude_none=True,
    responses=error_responses(*BODY_ERRORS, 409),
)
async def create_conversation(request: Request, user_id: User) -> dict[str, Any]:
    gateway = gateway_of(request)
    body = await read_model(request, ConversationCreateIn, gateway.settings.max_body_bytes)
    ask = rpc.ConversationCreateRequest(
        user_id=user_id,
        conversation_id=ids.new_id(),
        title=body.title,
        system_prompt=body.system_prompt,
    )
    reply = await answer_of("memory", gateway.backends.create_conversation(ask))
    if reply.conversation is None:  # a fresh random id taken by someone else
        raise ApiError(409, "conflict", "the conversation could not be created; retry")
    return _conversation(reply.conversation)


@router.get("/v1/conversations", response_model=ConversationList, response_model_exclude_none=True)
async def list_conversations(
    request: Request,
    user_id: User,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Cursor = None,
) -> dict[str, Any]:
    reply = await answer_of(
        "memory",
        gateway_of(request).backends.list_conversations(
            user_id, q or None, limit=limit, before=before
        ),
    )
    return {"conversations": [public(c) for c in reply.conversations]}


@router.get(
    "/v1/conversations/{conversation_id}",
    response_model=ConversationPage,
    response_model_exclude_none=True,
    responses=error_responses(400, 404),
)
async def get_conversation(
    conversation_id: str,
    request: Request,
    user_id: User,
    # The newest page by default (`has_more` and `before` reach older ones): a whole
    # long conversation would not fit one memory answer.
    limit: Annotated[int, Query(ge=1, le=1000)] = DEFAULT_PAGE,
    before: Cursor = None,
) -> Response:
    """The conversation with its active branch: each message with its `parent_id` and
    `siblings`, each answer with the caller's `feedback` (when given)."""
    check_conversation_id(conversation_id)
    reply = await answer_of(
        "memory",
        gateway_of(request).backends.get_conversation(
            user_id, conversation_id, limit=limit, before=before, with_feedback=True
        ),
    )
    conversation = found(reply.conversation)
    gateway = gateway_of(request)
    page = {
        **_conversation(conversation),
        "messages": await with_images(gateway, conversation_id, reply.messages),
        "has_more": reply.has_more,
        "read_by": reply.read_by,
    }
    return JSONResponse(page)  # as built: the response model would drop the nulls


@router.patch(
    "/v1/conversations/{conversation_id}",
    response_model=ConversationOut,
    response_model_exclude_none=True,
    responses=error_responses(*BODY_ERRORS, 404),
)
async def update_conversation(
    conversation_id: str, request: Request, user_id: User
) -> dict[str, Any]:
    check_conversation_id(conversation_id)
    gateway = gateway_of(request)
    body = await read_model(request, ConversationUpdateIn, gateway.settings.max_body_bytes)
    if (
        body.title is None
        and body.system_prompt is None
        and body.active_message_id is None
        and body.assistant is None
    ):
        raise ApiError(
            422,
            "validation_error",
            "give a title, a system_prompt, an active_message_id or assistant",
        )
    ask = rpc.ConversationUpdateRequest(
        user_id=user_id,
        conversation_id=conversation_id,
        title=body.title,
        system_prompt=body.system_prompt,
        active_message_id=body.active_message_id,
        assistant=body.assistant,
    )
    reply = await answer_of("memory", gateway.backends.update_conversation(ask))
    conversation = found(reply.conversation)
    if reply.forbidden:  # nothing changed
        raise ApiError(403, "forbidden", "a viewer may read this conversation, not change it")
    if reply.unknown_message:  # nothing changed
        raise ApiError(
            404, "not_found", f"no message {body.active_message_id!r} in this conversation"
        )
    if body.assistant is not None:  # every gateway answers (or not) from the next message
        gateway.owners.forget(conversation_id)
        await announce_access_change(gateway.nc, conversation_id)
    return _conversation(conversation)


@router.put(
    "/v1/conversations/{conversation_id}/read",
    openapi_extra=body_schema(ReadIn),
    response_model=ReadOut,
    responses=error_responses(*BODY_ERRORS, 404),
)
async def mark_conversation_read(
    conversation_id: str, request: Request, user_id: User
) -> dict[str, Any]:
    """The caller has read the conversation up to `message_id`: stored (the read position
    only moves forward), and sent live to the conversation's WebSocket clients as a
    `read` frame."""
    check_conversation_id(conversation_id)
    gateway = gateway_of(request)
    body = await read_model(request, ReadIn, gateway.settings.max_body_bytes)
    # Not told to any socket of the caller's: none sent it.
    position = await mark_read(
        gateway, user_id, conversation_id, body.message_id, client_id=ids.new_id()
    )
    return {"user_id": user_id, "message_id": position}


@router.delete(
    "/v1/conversations/{conversation_id}",
    status_code=204,
    responses=error_responses(400, 404),
)
async def delete_conversation(conversation_id: str, request: Request, user_id: User) -> Response:
    check_conversation_id(conversation_id)
    gateway = gateway_of(request)
    try:
        reply = await answer_of(
            "memory", gateway.backends.delete_conversation(user_id, conversation_id)
        )
    finally:
        # Its id may be someone else's next (also when the answer was lost on the way).
        gateway.owners.forget(conversation_id)
    if not reply.deleted:
        # The owner's alone: a member or viewer may see it but not delete it.
        if (await gateway.owners.grant(user_id, conversation_id)).role == "owner":
            raise no_such_conversation()  # auth off: none stored under this id
        raise ApiError(403, "forbidden", "only the conversation's owner deletes it")
    # Stop its generation, else its tokens go on landing on `livechat.events.<id>`,
    # for whoever holds the id next. A stop that could not be sent is a 503: the
    # deletion is idempotent for its owner, so the retry stops it then.
    await cancel_generation(gateway.nc, gateway.js, user_id, conversation_id)
    return Response(status_code=204)
