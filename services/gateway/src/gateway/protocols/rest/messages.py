"""POST /v1/conversations/{id}/messages: accept a message, then stream or return the reply."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from gateway.access.auth import current_user
from gateway.intake import pipeline
from gateway.intake.body import body_schema, read_model
from gateway.intake.checks import check_conversation_id
from gateway.intake.limits import limits_of
from gateway.openapi import API_ERRORS, BODY_ERRORS, answers, error_responses
from gateway.protocols.direct import EventStreamResponse
from gateway.protocols.rest.relay import json_reply, sse_reply, stored_as_json
from gateway.schemas import MessageIn, ReplyOut
from gateway.state import gateway_of

__all__ = ["SSE_HEADERS", "router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_ANSWERS = "The reply once it ended; with `Accept: text/event-stream`, its events as SSE"


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    openapi_extra=body_schema(MessageIn),
    response_model=ReplyOut,
    responses=answers(*BODY_ERRORS, 404, 429, streamed=_ANSWERS),
)
async def post_message(
    conversation_id: str, request: Request, user_id: Annotated[str, Depends(current_user)]
) -> Response:
    gateway = gateway_of(request)
    settings = gateway.settings
    check_conversation_id(conversation_id)
    body = await read_model(request, MessageIn, settings.max_body_bytes)
    message = await pipeline.admit(gateway, limits_of(request), user_id, conversation_id, body)
    streaming = "text/event-stream" in request.headers.get("accept", "")
    if message.answered is not None and not streaming:
        # Answered before (perhaps past the dedupe window): the same answer, nothing new.
        return JSONResponse(stored_as_json(message.answered))
    with gateway.connections.holding(user_id, wanted=streaming) as slot:  # 429 first
        # Attach before publishing: the reply's first event cannot be missed.
        feed = gateway.feed(conversation_id, user_id)
        sub = await pipeline.accept(gateway, message, feed)
    if streaming:
        return EventStreamResponse(
            sse_reply(gateway, feed, sub, user_id),
            headers=SSE_HEADERS,
            # Also when the client leaves before the first chunk.
            background=BackgroundTask(feed.close),
            slot=slot,
            send_timeout=settings.ws_send_timeout_seconds,
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
