"""POST /v1/conversations/{id}/messages: accept a message, then stream or return the reply."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from gateway.access.auth import current_user
from gateway.intake.accept import accept_message
from gateway.intake.body import read_model
from gateway.intake.chat import check_conversation_id, check_message
from gateway.intake.limits import limits_of
from gateway.protocols.rest.relay import (
    earlier_message,
    json_reply,
    reply_filter,
    sse_reply,
    stored_as_json,
)
from gateway.schemas import MessageIn
from gateway.state import gateway_of

__all__ = ["SSE_HEADERS", "router"]

router = APIRouter()

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post(
    "/v1/conversations/{conversation_id}/messages",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": MessageIn.model_json_schema()}},
        }
    },
)
async def post_message(
    conversation_id: str, request: Request, user_id: Annotated[str, Depends(current_user)]
) -> Response:
    gateway = gateway_of(request)
    settings = gateway.settings
    check_conversation_id(conversation_id)
    body = await read_model(request, MessageIn, settings.max_body_bytes)
    model = check_message(body, settings)
    await gateway.owners.check(user_id, conversation_id)  # another user's: 404
    earlier = None
    if body.id is not None:
        earlier = await earlier_message(gateway, user_id, conversation_id, body.id)
    if earlier is None or not earlier.repeat:  # a retry is counted once
        await limits_of(request).check(user_id)  # 429 before anything is published
    streaming = "text/event-stream" in request.headers.get("accept", "")
    if earlier is not None and earlier.reply is not None and not streaming:
        # Answered before (perhaps past the dedupe window): the same answer, nothing new.
        return JSONResponse(stored_as_json(earlier.reply))
    # Attach before publishing: the reply's first event cannot be missed.
    feed = gateway.feed(conversation_id)
    try:
        sub = await accept_message(gateway, user_id, conversation_id, body, model, earlier)
    except BaseException:
        await feed.close()
        raise
    gateway.metrics.messages_accepted.labels(str(sub.duplicate).lower()).inc()
    if sub.duplicate:
        # Already accepted: relay the generation that answers it, from its first event.
        feed.replay_after(0, reply_filter(sub.reply_id))
    if streaming:
        return StreamingResponse(
            sse_reply(gateway, feed, sub, user_id),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
            # Also when the client leaves before the first chunk.
            background=BackgroundTask(feed.close),
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
