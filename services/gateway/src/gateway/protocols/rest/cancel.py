"""POST /v1/conversations/{id}/cancel: the stop button."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from gateway.access.auth import current_user
from gateway.fanout.resume import check_access
from gateway.intake.cancel import cancel_generation
from gateway.intake.checks import check_conversation_id
from gateway.openapi import API_ERRORS, error_responses
from gateway.schemas import CancelOut
from gateway.state import gateway_of

__all__ = ["router"]

router = APIRouter(responses=error_responses(*API_ERRORS))


@router.post(
    "/v1/conversations/{conversation_id}/cancel",
    status_code=202,
    responses=error_responses(400, 403, 404),
)
async def cancel(
    conversation_id: str, request: Request, user_id: Annotated[str, Depends(current_user)]
) -> CancelOut:
    """202 `{"cancelled": bool}`: whether a generation was in flight and is being stopped;
    every client of the conversation then gets its `done` with `finish_reason: cancelled`."""
    check_conversation_id(conversation_id)
    gateway = gateway_of(request)
    # Another user's: 404; a viewer's: 403. The generation is the owner's account's.
    grant = await check_access(gateway, user_id, conversation_id, sends=True)
    cancelled = await cancel_generation(gateway.nc, gateway.js, grant.owner_id, conversation_id)
    return CancelOut(cancelled=cancelled)
