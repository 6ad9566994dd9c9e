"""The members of a conversation: who else reads it (viewers) or writes in it (members).

The owner adds and removes them; a member or viewer may leave. Each change is committed
by memory, then announced to every gateway (`gateway.fanout.access`): it holds for the
next request everywhere, and a removed member's attachments end.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from contracts import rpc
from gateway.access.auth import current_user
from gateway.backends import answer_of, found
from gateway.errors import ApiError
from gateway.fanout.access import announce_access_change
from gateway.intake.body import body_schema, read_model
from gateway.intake.checks import check_conversation_id
from gateway.openapi import API_ERRORS, BODY_ERRORS, error_responses
from gateway.schemas import USER_ID_MAX_CHARS, MemberIn, MemberList, MemberOut, public
from gateway.state import Gateway, gateway_of

__all__ = ["router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

User = Annotated[str, Depends(current_user)]
MemberId = Annotated[str, Path(min_length=1, max_length=USER_ID_MAX_CHARS)]


async def _ask(gateway: Gateway, request: rpc.MembersRequest) -> rpc.MembersReply:
    reply = await answer_of("memory", gateway.backends.members(request))
    found(reply.conversation)  # one the caller may not see: 404
    return reply


def _listed(reply: rpc.MembersReply) -> dict[str, Any]:
    return {"members": [public(member) for member in reply.members]}


@router.get(
    "/v1/conversations/{conversation_id}/members",
    response_model=MemberList,
    responses=error_responses(400, 404),
)
async def list_members(conversation_id: str, request: Request, user_id: User) -> dict[str, Any]:
    """The owner (role `owner`), then the members and viewers."""
    check_conversation_id(conversation_id)
    ask = rpc.MembersRequest(user_id=user_id, conversation_id=conversation_id)
    return _listed(await _ask(gateway_of(request), ask))


@router.post(
    "/v1/conversations/{conversation_id}/members",
    status_code=201,
    openapi_extra=body_schema(MemberIn),
    response_model=MemberOut,
    responses=error_responses(*BODY_ERRORS, 404),
)
async def add_member(conversation_id: str, request: Request, user_id: User) -> dict[str, Any]:
    """Let someone in as a `member` or a `viewer` (the owner only; again: a new role)."""
    check_conversation_id(conversation_id)
    gateway = gateway_of(request)
    body = await read_model(request, MemberIn, gateway.settings.max_body_bytes)
    ask = rpc.MembersRequest(
        user_id=user_id,
        conversation_id=conversation_id,
        action="add",
        member_id=body.user_id,
        role=body.role,
    )
    reply = await _ask(gateway, ask)
    if reply.forbidden:
        raise ApiError(403, "forbidden", "only the conversation's owner adds members")
    if reply.unknown_member:
        raise ApiError(422, "validation_error", "user_id: the owner is no member of their own")
    await _changed(gateway, conversation_id)
    return {"user_id": body.user_id, "role": body.role}


@router.delete(
    "/v1/conversations/{conversation_id}/members/{member_id}",
    status_code=204,
    responses=error_responses(400, 404),
)
async def remove_member(
    conversation_id: str, member_id: MemberId, request: Request, user_id: User
) -> Response:
    """Remove a member or viewer (the owner), or leave (the member themselves); their
    clients attached to the conversation are detached."""
    check_conversation_id(conversation_id)
    gateway = gateway_of(request)
    ask = rpc.MembersRequest(
        user_id=user_id, conversation_id=conversation_id, action="remove", member_id=member_id
    )
    reply = await _ask(gateway, ask)
    if reply.forbidden:
        raise ApiError(403, "forbidden", "only the owner removes others; a member may leave")
    if reply.unknown_member:
        raise ApiError(404, "not_found", f"{member_id!r} is no member of this conversation")
    await _changed(gateway, conversation_id, removed=member_id)
    return Response(status_code=204)


async def _changed(gateway: Gateway, conversation_id: str, removed: str | None = None) -> None:
    gateway.owners.forget(conversation_id)  # here at once; elsewhere on the announcement
    await announce_access_change(gateway.nc, conversation_id, removed)
