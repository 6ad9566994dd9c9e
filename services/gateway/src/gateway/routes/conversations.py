"""History and usage, answered by the memory and usage services."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from gateway.auth import current_user
from gateway.backends import BackendUnavailable
from gateway.chat import check_conversation_id
from gateway.errors import ApiError
from gateway.runtime import gateway_of
from gateway.schemas import public

__all__ = ["router"]

router = APIRouter()

User = Annotated[str, Depends(current_user)]


def _unavailable(service: str) -> ApiError:
    message = f"the {service} service did not answer"
    return ApiError(503, "service_unavailable", message, retryable=True)


@router.get("/v1/conversations")
async def list_conversations(
    request: Request, user_id: User, q: Annotated[str | None, Query(max_length=200)] = None
) -> dict[str, Any]:
    try:
        reply = await gateway_of(request).backends.list_conversations(user_id, q or None)
    except BackendUnavailable:
        raise _unavailable("memory") from None
    return {"conversations": [public(c) for c in reply.conversations]}


@router.get("/v1/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, request: Request, user_id: User) -> dict[str, Any]:
    check_conversation_id(conversation_id)
    try:
        reply = await gateway_of(request).backends.get_conversation(user_id, conversation_id)
    except BackendUnavailable:
        raise _unavailable("memory") from None
    if reply.conversation is None:
        raise ApiError(404, "not_found", "no such conversation")
    return {**public(reply.conversation), "messages": [public(m) for m in reply.messages]}


@router.get("/v1/usage")
async def usage(request: Request, user_id: User) -> dict[str, Any]:
    try:
        reply = await gateway_of(request).backends.usage_totals(user_id)
    except BackendUnavailable:
        raise _unavailable("usage") from None
    return {
        "totals": public(reply.totals),
        "by_model": {alias: public(t) for alias, t in reply.by_model.items()},
    }
