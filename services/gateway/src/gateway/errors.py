"""The one error shape of the public API: {"error": {"code", "message"}}."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

__all__ = [
    "ApiError",
    "describe_validation_errors",
    "error_body",
    "error_response",
    "error_status",
    "from_validation_error",
    "install_error_handlers",
    "log_unexpected",
    "no_such_conversation",
    "not_answering",
]

log = logging.getLogger(__name__)

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error a client sees as {"error": {"code", "message"}} with `status`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        retryable: bool = False,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.headers = dict(headers or {})
        # Extra fields of the error object (e.g. the message id to retry with).
        self.details = dict(details or {})


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **(details or {})}}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
    details: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body = error_body(code, message, details)
    return JSONResponse(body, status_code=status, headers=headers)


def describe_validation_errors(errors: Iterable[Mapping[str, Any]]) -> str:
    # Location and reason only: the offending input may be a user's message.
    parts = []
    for err in list(errors)[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


def from_validation_error(exc: ValidationError) -> ApiError:
    """Not JSON at all → 400 invalid_json; JSON of the wrong shape → 422 validation_error."""
    errors = exc.errors(include_input=False, include_url=False)
    if any(err["type"] == "json_invalid" for err in errors):
        return ApiError(400, "invalid_json", "the body is not valid JSON")
    return ApiError(422, "validation_error", describe_validation_errors(errors))


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, exc.details)


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if any(err.get("type") == "json_invalid" for err in errors):
        return error_response(400, "invalid_json", "the body is not valid JSON")
    return error_response(422, "validation_error", describe_validation_errors(errors))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, exc.headers)


def _where(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "?"
    return f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}"


def log_unexpected(exc: BaseException) -> None:
    """Log an unhandled error: its class and where it was raised, never str(exc) or a
    traceback at error level (an exception's text can quote a user's message)."""
    log.error(
        "unhandled error: code=internal_error class=%s at %s", type(exc).__name__, _where(exc)
    )
    log.debug("unhandled error traceback", exc_info=exc)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log_unexpected(exc)
    return error_response(500, "internal_error", "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)


# The HTTP status of a reply's `error` event, when it is answered as one response.
_EVENT_ERROR_STATUS = {
    "rate_limited": 429,
    "budget_exceeded": 429,
    "quota_exceeded": 429,
    "invalid_request": 400,
    "bad_request": 400,
    "unknown_model": 400,
    "content_filter": 400,
    "context_too_long": 413,
    "message_too_long": 413,
    "not_found": 404,
    "unauthorized": 401,
    "timeout": 503,
}


def error_status(code: str) -> int:
    """The HTTP status of an `error` event in JSON mode; upstream trouble is a 503."""
    return _EVENT_ERROR_STATUS.get(code, 503)


def not_answering(service: str) -> ApiError:
    """A backend service that did not answer: a retryable 503."""
    return ApiError(
        503, "service_unavailable", f"the {service} service did not answer", retryable=True
    )


def no_such_conversation() -> ApiError:
    """Also for another user's conversation: whose it is is never told."""
    return ApiError(404, "not_found", "no such conversation")
