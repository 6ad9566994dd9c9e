"""Feedback on answers (kept by memory): set, remove, and the caller's as CSV."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse

from contracts import ids, rpc
from gateway.access.auth import current_user
from gateway.backends import answer_of
from gateway.errors import ApiError, no_such_conversation
from gateway.intake.body import body_schema, read_model
from gateway.intake.checks import check_conversation_id
from gateway.openapi import API_ERRORS, BODY_ERRORS, answers, error_responses
from gateway.protocols.rest.csvfile import csv_download
from gateway.schemas import FeedbackIn, FeedbackOut
from gateway.state import gateway_of

__all__ = ["CSV_COLUMNS", "router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

User = Annotated[str, Depends(current_user)]
_PATH = "/v1/conversations/{conversation_id}/messages/{message_id}/feedback"

CSV_COLUMNS = ("conversation_id", "message_id", "user_id", "rating", "comment", "updated_at")
_PAGE = 200  # rows per reply: comments of 2,000 characters stay well under max_payload


def _check(conversation_id: str, message_id: str) -> None:
    check_conversation_id(conversation_id)
    if not ids.is_valid_id(message_id):
        raise ApiError(404, "not_found", "no such message")


def _refused(reply: rpc.FeedbackWriteReply, message_id: str) -> None:
    """The error of a feedback memory refused (nothing changed)."""
    if reply.outcome == "no_conversation":
        raise no_such_conversation()
    if reply.outcome == "no_message":
        raise ApiError(404, "not_found", f"no message {message_id!r} in this conversation")
    if reply.outcome == "not_assistant":
        raise ApiError(
            422,
            "not_an_answer",
            f"message {message_id!r} is not an assistant message: feedback is on answers",
        )


@router.put(
    _PATH,
    response_model=FeedbackOut,
    response_model_exclude_none=True,
    openapi_extra=body_schema(FeedbackIn),
    responses=error_responses(*BODY_ERRORS, 404),
)
async def set_feedback(
    conversation_id: str, message_id: str, request: Request, user_id: User
) -> dict[str, Any]:
    """Set (or replace) the caller's feedback on an assistant message."""
    _check(conversation_id, message_id)
    gateway = gateway_of(request)
    body = await read_model(request, FeedbackIn, gateway.settings.max_body_bytes)
    comment = body.comment.strip() if body.comment is not None else None
    ask = rpc.FeedbackSetRequest(
        user_id=user_id,
        conversation_id=conversation_id,
        message_id=message_id,
        rating=body.rating,
        comment=comment or None,
    )
    reply = await answer_of("memory", gateway.backends.set_feedback(ask))
    _refused(reply, message_id)
    if reply.feedback is None:  # "stored" always carries it
        raise ApiError(503, "service_unavailable", "the memory service answered oddly")
    return {
        "conversation_id": conversation_id,
        "message_id": message_id,
        **reply.feedback.model_dump(mode="json", exclude_none=True),
    }


@router.delete(_PATH, status_code=204, responses=error_responses(400, 404))
async def delete_feedback(
    conversation_id: str, message_id: str, request: Request, user_id: User
) -> Response:
    """Remove the caller's feedback on an answer (204 also when there was none)."""
    _check(conversation_id, message_id)
    ask = rpc.FeedbackDeleteRequest(
        user_id=user_id, conversation_id=conversation_id, message_id=message_id
    )
    reply = await answer_of("memory", gateway_of(request).backends.delete_feedback(ask))
    _refused(reply, message_id)
    return Response(status_code=204)


def _csv_row(entry: rpc.FeedbackEntry) -> list[Any]:
    return [
        entry.conversation_id,
        entry.message_id,
        entry.user_id,
        entry.feedback.rating,
        entry.feedback.comment or "",
        entry.feedback.updated_at.isoformat(),
    ]


@router.get(
    "/v1/feedback/export",
    responses=answers(streamed="the caller's feedback, as CSV", media_type="text/csv"),
)
async def export(request: Request, user_id: User) -> StreamingResponse:
    """The caller's feedback, one row per answer, oldest change first."""
    backends = gateway_of(request).backends

    async def page(after: str | None) -> rpc.FeedbackExportReply:
        query = rpc.FeedbackExportRequest(user_id=user_id, after=after, limit=_PAGE)
        return await answer_of("memory", backends.export_feedback(query))

    return await csv_download(
        columns=CSV_COLUMNS,
        page=page,
        rows=lambda current: [_csv_row(entry) for entry in current.entries],
        filename="feedback.csv",
    )
