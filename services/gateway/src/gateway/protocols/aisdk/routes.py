"""POST /api/chat and GET /api/chat/{id}/stream: the Vercel AI SDK 5+ UI message stream.

`useChat` with `DefaultChatTransport` works against these unchanged: the chat
id is the conversation id, a submitted message goes through the same path as
POST /v1/conversations/{id}/messages (stored, answered once), and a
regeneration asks for a new reply to the stored user message (the earlier
reply stays in history).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.background import BackgroundTask

from contracts import ids, rpc
from gateway.access.auth import current_user
from gateway.backends import BackendUnavailable
from gateway.errors import ApiError, from_validation_error
from gateway.fanout.feed import EventFeed, attached
from gateway.fanout.resume import check_access, prepare_resume
from gateway.intake import pipeline, tree
from gateway.intake.attachments import from_data_url
from gateway.intake.body import body_schema, read_model
from gateway.intake.checks import check_conversation_id
from gateway.intake.connections import Slot
from gateway.intake.limits import limits_of
from gateway.intake.publisher import Submission
from gateway.openapi import API_ERRORS, BODY_ERRORS, answers, error_responses
from gateway.protocols.aisdk.schema import UIChatRequest, UIMessage
from gateway.protocols.aisdk.stream import UI_STREAM_END, UI_STREAM_HEADERS, ui_message_stream
from gateway.protocols.direct import EventStreamResponse
from gateway.schemas import AttachmentIn, MessageIn
from gateway.state import Gateway, gateway_of

__all__ = ["router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

_REGEN_PAGE = 50  # newest messages searched for the user message to answer again


def _message(body: UIChatRequest, last: UIMessage, message_id: str | None) -> MessageIn:
    images = [
        from_data_url(part.url or "", f"file part {index}")
        for index, part in enumerate(last.images())
    ]
    try:
        return MessageIn(
            content=last.text(),
            attachments=tuple(
                AttachmentIn(type="image", media_type=i.media_type, data=i.data) for i in images
            ),
            id=message_id,
            model=body.model,
            system_prompt=body.system_prompt,
            max_tokens=body.max_tokens,
            temperature=body.temperature,
        )
    except ValidationError as exc:
        raise from_validation_error(exc) from None


async def _stored_conversation(
    gateway: Gateway, user_id: str, chat_id: str, message_id: str
) -> rpc.ConversationGetReply:
    # The message asked about, else the newest page: never the whole (maybe huge) chat.
    try:
        if ids.is_valid_id(message_id):
            found = await gateway.backends.get_conversation(
                user_id, chat_id, message_ids=(message_id,)
            )
            if found.conversation is None or found.messages:
                return found
        return await gateway.backends.get_conversation(user_id, chat_id, limit=_REGEN_PAGE)
    except BackendUnavailable as exc:
        raise ApiError(503, "service_unavailable", "history is unavailable; retry") from exc


async def _regenerate(
    gateway: Gateway, body: UIChatRequest, user_message_id: str, message: pipeline.Admitted
) -> Submission:
    stored = await _stored_conversation(gateway, message.user_id, body.id, user_message_id)
    if stored.conversation is None:
        raise ApiError(404, "not_found", "no such chat")
    users = [m for m in stored.messages if m.role == "user"]
    asked = next((m for m in users if m.id == user_message_id), users[-1] if users else None)
    if asked is None:
        raise ApiError(404, "not_found", "the chat has no user message to answer")
    return await tree.regenerate(gateway, message, asked)


def _stream(
    gateway: Gateway, feed: EventFeed, sub: Submission, user_id: str, slot: Slot | None
) -> Response:
    return EventStreamResponse(
        ui_message_stream(gateway, feed, sub, user_id),
        headers=UI_STREAM_HEADERS,
        background=BackgroundTask(feed.close),
        slot=slot,
        send_timeout=gateway.settings.ws_send_timeout_seconds,
    )


@router.post(
    "/api/chat",
    openapi_extra=body_schema(UIChatRequest),
    responses=answers(*BODY_ERRORS, 404, 409, 429, streamed="a UI message stream"),
)
async def post_chat(request: Request, user_id: Annotated[str, Depends(current_user)]) -> Response:
    gateway = gateway_of(request)
    settings = gateway.settings
    body = await read_model(
        request,
        UIChatRequest,
        settings.max_body_bytes,
        media=UIChatRequest.image_bytes,
        media_max=settings.attachments_max_base64,
    )
    last = body.last_user_message()
    if last is None:
        raise ApiError(422, "validation_error", "messages: no message with role 'user'")
    # Ids of other generators are accepted; one that is no livechat id gets a fresh one.
    message_id = last.id if ids.is_valid_id(last.id) else None
    message = _message(body, last, message_id)
    regenerate = body.trigger == "regenerate-message"
    # A regeneration finds the chat in memory; a message is answered once, as for
    # POST .../messages.
    admitted = await pipeline.admit(
        gateway, limits_of(request), user_id, body.id, message, new_message=not regenerate
    )
    if not admitted.answers:
        # A person took over: stored and shown to the chat's clients, not answered (the
        # stream ends at once, with no assistant message).
        await pipeline.accept(gateway, admitted, None)
        return Response(UI_STREAM_END, headers=UI_STREAM_HEADERS, media_type="text/event-stream")
    with gateway.connections.holding(user_id) as slot:  # 429 first
        # Attach before publishing: the reply's first event cannot be missed.
        feed = gateway.feed(body.id, user_id)
        if regenerate:
            sub = await attached(feed, _regenerate(gateway, body, last.id, admitted))
        else:
            sub = await pipeline.accept(gateway, admitted, feed)
    return _stream(gateway, feed, sub, user_id, slot)


@router.get(
    "/api/chat/{chat_id}/stream",
    responses=answers(400, 429, streamed="the reply in flight", empty="no reply in flight"),
)
async def resume_chat(
    chat_id: str, request: Request, user_id: Annotated[str, Depends(current_user)]
) -> Response:
    gateway = gateway_of(request)
    check_conversation_id(chat_id)
    try:
        await check_access(gateway, user_id, chat_id)
    except ApiError as exc:
        if exc.status != 404:
            raise
        # `useChat({resume: true})` asks on every mount, for new chats too: nothing in
        # flight. Another user's chat answers the same (whether an id is used is not told).
        return Response(status_code=204)
    with gateway.connections.holding(user_id) as slot:  # 429 first
        feed = gateway.feed(chat_id, user_id)  # attached before looking: nothing live is missed
        # From the first event of the reply in flight: the SDK replaces its partial
        # message with this one (`resumeStreamIsReplay`).
        resume = await attached(feed, prepare_resume(gateway, feed, None))
    if resume is None or not resume.open:
        if slot is not None:
            slot.release()
        await feed.close()
        return Response(status_code=204)
    reply = next(iter(resume.open))
    sub = Submission(chat_id, "", reply, "", duplicate=False)
    return _stream(gateway, feed, sub, user_id, slot)
