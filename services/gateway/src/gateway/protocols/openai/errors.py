"""OpenAI's error shape for every failure of the OpenAI routes, 401 and 405 included.

The routes of this protocol use `OpenAIRoute`: whatever the route, its dependencies
(auth) or the body reader raise as the livechat error is answered as
`{"error": {"message", "type", "param", "code"}}`, so the `openai` SDK raises its own
classes (`AuthenticationError`, `NotFoundError`, …). Other routes keep the livechat shape.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.errors import ApiError, describe_validation_errors, log_unexpected
from gateway.protocols.openai.schema import openai_error

__all__ = ["OpenAIRoute", "as_openai"]

# The request field an error is about, where there is one.
_PARAMS = {
    "model_not_found": "model",
    "invalid_messages": "messages",
    "invalid_tool_choice": "tool_choice",
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def as_openai(exc: ApiError) -> Response:
    """`exc` in OpenAI's shape. OpenAI answers a malformed body with 400, livechat 422."""
    status = 400 if exc.status == 422 else exc.status
    return openai_error(
        status, exc.code, exc.message, param=_PARAMS.get(exc.code), headers=exc.headers
    )


def _api_error_of(exc: Exception) -> ApiError | None:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, RequestValidationError):
        return ApiError(422, "validation_error", describe_validation_errors(exc.errors()))
    if isinstance(exc, StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return ApiError(exc.status_code, code, message, headers=exc.headers)
    return None


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class OpenAIRoute(APIRoute):
    """An APIRoute whose errors are OpenAI-shaped (FastAPI's `route_class`)."""

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()

        async def openai_shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                error = _api_error_of(exc)
                if error is None:
                    log_unexpected(exc)
                    error = ApiError(500, "internal_error", "internal error")
                return as_openai(error)

        return openai_shaped

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = {"Allow": ", ".join(sorted(self.methods))}
            message = f"{scope['method']} is not allowed here"
            answer = as_openai(ApiError(405, "method_not_allowed", message, headers=allowed))
            await answer(scope, receive, send)
            return
        await super().handle(scope, receive, send)
