"""POST /v1/conversations/{id}/messages: accept a message, then stream or return the reply."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from gateway.auth import current_user
from gateway.body import read_model
from gateway.chat import check_conversation_id, check_message
from gateway.relay import json_reply, reply_filter, sse_reply
from gateway.runtime import gateway_of
from gateway.schemas import MessageIn

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
    # Attach before publishing: the reply's first event cannot be missed.
    feed = gateway.feed(conversation_id)
    try:
        sub = await gateway.chat.submit(user_id, conversation_id, body, model)
    except BaseException:
        await feed.close()
        raise
    gateway.metrics.messages_accepted.labels(str(sub.duplicate).lower()).inc()
    if sub.duplicate:
        # Already accepted: relay the generation that answers it, from its first event.
        feed.replay_after(0, reply_filter(sub.reply_id))
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(
            sse_reply(gateway, feed, sub, user_id),
            media_type="text/event-stream",
            headers=SSE_HEADERS,
            # Also when the client leaves before the first chunk.
            background=BackgroundTask(feed.close),
        )
    try:
        answer = await json_reply(gateway, feed, sub, user_id)
    finally:
        await feed.close()
    return JSONResponse(answer)
