"""GET /v1/conversations/{id}/events: attach to a conversation, or resume after an event id."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from gateway.access.auth import current_user
from gateway.fanout.feed import attached
from gateway.fanout.resume import check_access, parse_last_event_id, prepare_resume, resume_sse
from gateway.intake.checks import check_conversation_id
from gateway.openapi import API_ERRORS, answers, error_responses
from gateway.protocols.direct import EventStreamResponse
from gateway.protocols.rest.messages import SSE_HEADERS
from gateway.state import gateway_of

__all__ = ["router"]

router = APIRouter(responses=error_responses(*API_ERRORS))


@router.get(
    "/v1/conversations/{conversation_id}/events",
    responses=answers(
        400,
        404,
        429,
        streamed="the events, as SSE",
        empty="no reply running and no stored event newer than the id",
    ),
)
async def conversation_events(
    conversation_id: str,
    request: Request,
    user_id: Annotated[str, Depends(current_user)],
    last_event_id: Annotated[str | None, Query()] = None,
) -> Response:
    gateway = gateway_of(request)
    check_conversation_id(conversation_id)
    # The header is what EventSource sends when it reconnects by itself.
    after = parse_last_event_id(request.headers.get("last-event-id", last_event_id))
    await check_access(gateway, user_id, conversation_id)
    with gateway.connections.holding(user_id) as slot:  # 429 first
        # Attached before looking: nothing live is missed.
        feed = gateway.feed(conversation_id, user_id)
        resume = await attached(feed, prepare_resume(gateway, feed, after))
    if resume is None:
        if slot is not None:  # always taken here (`wanted`), but typed optional
            slot.release()
        await feed.close()
        return Response(status_code=204)
    return EventStreamResponse(
        resume_sse(gateway, feed, resume),
        headers=SSE_HEADERS,
        background=BackgroundTask(feed.close),
        slot=slot,
        send_timeout=gateway.settings.ws_send_timeout_seconds,
    )
