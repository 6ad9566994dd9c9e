"""GET /v1/usage (totals over a window, optionally grouped) and GET /v1/usage/export (CSV)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from nats.aio.client import Client
from nats.errors import Error as NatsError
from pydantic import BaseModel, ValidationError

from contracts import rpc, subjects
from contracts.events import UsageRecorded
from gateway.access.auth import current_user
from gateway.errors import ApiError, not_answering
from gateway.openapi import API_ERRORS, answers, error_responses
from gateway.protocols.rest.csvfile import csv_download
from gateway.schemas import UsageOut, public
from gateway.state import gateway_of

__all__ = ["CSV_COLUMNS", "router"]

router = APIRouter(responses=error_responses(*API_ERRORS))

User = Annotated[str, Depends(current_user)]
R = TypeVar("R", bound=BaseModel)

CSV_COLUMNS = (
    "attempt_id",
    "occurred_at",
    "recorded_at",
    "conversation_id",
    "message_id",
    "model",
    "provider",
    "provider_model",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "estimated",
    "time_to_first_token_ms",
    "duration_ms",
    "cost_usd",
)
_PAGE = 500  # rows per reply: well under NATS max_payload (1 MiB) with the longest ids


def _moment(name: str, value: str | None, *, end: bool) -> datetime | None:
    """An ISO date or date-time; a date `to` includes that whole day. Naive means UTC."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422, "validation_error", f"{name}: not an ISO 8601 date or date-time"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    start, stop = _moment("from", since, end=False), _moment("to", until, end=True)
    if start is not None and stop is not None and start >= stop:
        raise ApiError(422, "validation_error", "from: must be before to")
    return start, stop


async def _call(nc: Client, subject: str, request: BaseModel, reply: type[R], timeout: float) -> R:
    try:
        answer = await nc.request(subject, request.model_dump_json().encode(), timeout=timeout)
        return reply.model_validate_json(answer.data)
    except (NatsError, TimeoutError, ValidationError):
        raise not_answering("usage") from None


@router.get("/v1/usage", response_model=UsageOut, response_model_exclude_none=True)
async def usage(
    request: Request,
    user_id: User,
    since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
    group_by: rpc.UsageGroupBy | None = None,
) -> dict[str, Any]:
    start, stop = _window(since, until)
    gateway = gateway_of(request)
    query = rpc.UsageTotalsRequest(
        user_id=user_id,
        since=start,
        until=stop,
        group_by=group_by,
    )
    reply = await _call(
        gateway.nc,
        subjects.USAGE_TOTALS,
        query,
        rpc.UsageTotalsReply,
        gateway.settings.rpc_timeout_seconds,
    )
    body: dict[str, Any] = {
        "totals": public(reply.totals),
        "by_model": {alias: public(t) for alias, t in reply.by_model.items()},
    }
    if group_by is not None and reply.groups is not None:
        body[f"by_{group_by}"] = {key: public(t) for key, t in reply.groups.items()}
    return body


def _csv_row(entry: UsageRecorded) -> list[Any]:
    return [
        entry.attempt_id,
        entry.occurred_at.isoformat(),
        entry.recorded_at.isoformat(),
        entry.conversation_id,
        entry.message_id,
        entry.model,
        entry.provider,
        entry.provider_model,
        entry.outcome,
        entry.usage.prompt_tokens,
        entry.usage.completion_tokens,
        entry.usage.total_tokens,
        str(entry.estimated).lower(),
        "" if entry.time_to_first_token_ms is None else entry.time_to_first_token_ms,
        entry.duration_ms,
        "" if entry.cost_usd is None else entry.cost_usd,
    ]


@router.get(
    "/v1/usage/export",
    responses=answers(streamed="the ledger entries, as CSV", media_type="text/csv"),
)
async def export(
    request: Request,
    user_id: User,
    since: Annotated[str | None, Query(alias="from", max_length=40)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=40)] = None,
) -> StreamingResponse:
    """Every ledger entry of the caller (one row per generation attempt), oldest first."""
    start, stop = _window(since, until)
    gateway = gateway_of(request)
    timeout = gateway.settings.rpc_timeout_seconds

    async def page(after: str | None) -> rpc.UsageExportReply:
        query = rpc.UsageExportRequest(
            user_id=user_id, since=start, until=stop, after=after, limit=_PAGE
        )
        return await _call(gateway.nc, subjects.USAGE_EXPORT, query, rpc.UsageExportReply, timeout)

    return await csv_download(
        columns=CSV_COLUMNS,
        page=page,
        rows=lambda current: [_csv_row(entry) for entry in current.entries],
        filename="usage.csv",
    )
