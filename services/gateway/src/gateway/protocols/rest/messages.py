"""POST /v1/conversations/{id}/messages: accept a message, then stream or return the reply."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from gateway.access.auth import current_user
from gateway.fanout.feed import EventFeed, attached
from gateway.intake import pipeline, tree
from gateway.intake.body import body_schema, read_model
from gateway.intake.checks import check_conversation_id
from gateway.intake.connections import Slot
from gateway.intake.limits import limits_of
from gateway.intake.publisher import Submission
from gateway.openapi import API_ERRORS, BODY_ERRORS, answers, error_responses
from gateway.protocols.direct import EventStreamResponse
from gateway.protocols.rest.relay import json_reply, sse_reply, stored_as_json
from gateway.schemas import MessageIn, RegenerateIn, ReplyOut, UnansweredOut, public
from gateway.state import Gateway, gateway_of

__all__ = ["SSE_HEADERS", "router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_ANSWERS = "The reply once it ended; with `Accept: text/event-stream`, its events as SSE"
_UNANSWERED = "The assistant is off (a person took over): the message, stored and relayed"


def _image_bytes(body: MessageIn) -> int:
    return sum(len(a.data) for a in body.attachments)


def _optional_body(model: type[RegenerateIn]) -> dict[str, Any]:
    schema = body_schema(model)
    schema["requestBody"]["required"] = False
    return schema


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    openapi_extra=body_schema(MessageIn),
    response_model=ReplyOut,
    responses={
        **answers(*BODY_ERRORS, 404, 429, streamed=_ANSWERS),
        202: {"model": UnansweredOut, "description": _UNANSWERED},
    },
)
async def post_message(
    conversation_id: str, request: Request, user_id: Annotated[str, Depends(current_user)]
) -> Response:
    gateway = gateway_of(request)
    settings = gateway.settings
    check_conversation_id(conversation_id)
    body = await read_model(
        request,
        MessageIn,
        settings.max_body_bytes,
        media=_image_bytes,
        media_max=settings.attachments_max_base64,
    )
    message = await pipeline.admit(gateway, limits_of(request), user_id, conversation_id, body)
    streaming = "text/event-stream" in request.headers.get("accept", "")
    if message.answered is not None and not streaming:
        # Answered before (perhaps past the dedupe window): the same answer, nothing new.
        return JSONResponse(stored_as_json(message.answered))
    if not message.answers:  # a person took over: stored and relayed, not answered
        sub = await pipeline.accept(gateway, message, None)
        stored = public(pipeline.user_message(message, sub))
        return JSONResponse({"message": stored}, status_code=202)
    with gateway.connections.holding(user_id, wanted=streaming) as slot:  # 429 first
        # Attach before publishing: the reply's first event cannot be missed.
        feed = gateway.feed(conversation_id, user_id)
        sub = await pipeline.accept(gateway, message, feed)
    return await _reply(request, gateway, feed, sub, user_id, slot)


@router.post(
    "/v1/conversations/{conversation_id}/messages/{message_id}/regenerate",
    openapi_extra=_optional_body(RegenerateIn),
    response_model=ReplyOut,
    responses=answers(*BODY_ERRORS, 404, 409, 429, streamed=_ANSWERS),
)
async def regenerate_message(
    conversation_id: str,
    message_id: str,
    request: Request,
    user_id: Annotated[str, Depends(current_user)],
) -> Response:
    """Answer a stored user message again: a new reply, a sibling of the earlier ones,
    streamed or returned as a send's."""
    gateway = gateway_of(request)
    settings = gateway.settings
    check_conversation_id(conversation_id)
    body = await read_model(request, RegenerateIn, settings.max_body_bytes, empty_ok=True)
    question = await tree.user_message(gateway, user_id, conversation_id, message_id)
    asked = MessageIn(
        content=question.content,
        model=body.model,
        system_prompt=body.system_prompt,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
    )
    message = await pipeline.admit(
        gateway, limits_of(request), user_id, conversation_id, asked, new_message=False
    )
    streaming = "text/event-stream" in request.headers.get("accept", "")
    with gateway.connections.holding(user_id, wanted=streaming) as slot:  # 429 first
        feed = gateway.feed(conversation_id, user_id)
        sub = await attached(feed, tree.regenerate(gateway, message, question))
    return await _reply(request, gateway, feed, sub, user_id, slot)


async def _reply(
    request: Request,
    gateway: Gateway,
    feed: EventFeed,
    sub: Submission,
    user_id: str,
    slot: Slot | None,
) -> Response:
    """The reply `sub` asked for, relayed on `feed`: SSE (holding the connection `slot`),
    else JSON once it ended (`slot` None)."""
    if slot is not None:
        return EventStreamResponse(
            sse_reply(gateway, feed, sub, user_id),
            headers=SSE_HEADERS,
            # Also when the client leaves before the first chunk.
            background=BackgroundTask(feed.close),
            slot=slot,
            send_timeout=gateway.settings.ws_send_timeout_seconds,
        )
    try:
        answer = await _unless_disconnected(request, json_reply(gateway, feed, sub, user_id))
    finally:
        await feed.close()  # always: also when the client left or the wait was cancelled
    if answer is None:
        return Response(status_code=499)  # nobody reads it; the listener is detached
    return JSONResponse(answer)


async def _unless_disconnected(
    request: Request, answer: Coroutine[Any, Any, dict[str, Any]]
) -> dict[str, Any] | None:
    """`answer`'s result, or None when the client disconnects first (it is cancelled)."""
    waiting = asyncio.ensure_future(answer)
    watching = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((waiting, watching), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiting, watching):
            if not task.done():
                task.cancel()
        await asyncio.gather(waiting, watching, return_exceptions=True)
    if waiting.cancelled():
        return None
    return waiting.result()


async def _disconnected(request: Request) -> None:
    # The body was read already: what comes next on the ASGI channel is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass
