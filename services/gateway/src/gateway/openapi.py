"""What the OpenAPI document tells beyond what FastAPI infers: the shape of each error
status a route answers with, and the answers that are not JSON (streams, CSV, none)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pydantic import BaseModel

from gateway.schemas import ErrorOut

__all__ = ["API_ERRORS", "BODY_ERRORS", "Responses", "answers", "error_responses"]

Responses = dict[int | str, dict[str, Any]]

# What any route of the API may answer: no credentials, a foreign Origin or (auth off)
# Host (gateway.access.guard), parameters of the wrong shape, a backend that did not
# answer.
API_ERRORS = (401, 403, 422, 503)
# What a route that reads a JSON body (`read_model`) adds: not JSON, too large, not
# declared as JSON, of the wrong shape.
BODY_ERRORS = (400, 413, 415, 422)


def error_responses(*statuses: int, model: type[BaseModel] = ErrorOut) -> Responses:
    """`responses=` for error statuses, each with the one error shape (`model`: the
    shape of a protocol that has its own). Declaring 422 also replaces FastAPI's default
    422 schema, which is not what the handlers answer with."""
    return {s: {"model": model, "description": HTTPStatus(s).phrase} for s in statuses}


def answers(
    *errors: int,
    streamed: str | None = None,
    media_type: str = "text/event-stream",
    empty: str | None = None,
) -> Responses:
    """`responses=` of a route with error statuses whose 200 may be a stream (`streamed`
    says what it carries) and that may answer 204 (`empty` says when)."""
    responses = error_responses(*errors)
    if streamed is not None:
        responses[200] = {"content": {media_type: {}}, "description": streamed}
    if empty is not None:
        responses[204] = {"description": empty}
    return responses
