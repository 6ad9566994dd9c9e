"""Reading a JSON body with a size cap, parsed once into its model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from gateway.errors import ApiError, from_validation_error

__all__ = ["body_schema", "is_json", "read_model", "unsupported_media_type"]

M = TypeVar("M", bound=BaseModel)


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A route's `openapi_extra` for a body read with `read_model` (not a parameter)."""
    content = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than {limit} bytes")


def unsupported_media_type() -> ApiError:
    return ApiError(
        415, "unsupported_media_type", "the body must be sent as Content-Type: application/json"
    )


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


async def read_model(
    request: Request,
    model: type[M],
    max_bytes: int,
    *,
    empty_ok: bool = False,
    media: Callable[[M], int] | None = None,
    media_max: int = 0,
) -> M:
    """The body as `model`; `empty_ok`: no body at all is `{}` (every field optional).

    `media`: the bytes of a parsed body's images (base64), which may add up to
    `media_max` to `max_bytes`; the rest of the body keeps to `max_bytes`."""
    limit = max_bytes
    max_bytes = max_bytes + media_max if media is not None else max_bytes
    # Declared, never guessed: a page of another site can post a body without
    # Content-Type (or as text/plain) with no preflight, never as application/json.
    declared_json = is_json(request.headers.get("content-type", ""))
    if not declared_json and not empty_ok:
        raise unsupported_media_type()
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    # Counted while reading: a chunked body has no Content-Length to trust.
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not declared_json and raw.strip():  # only an empty body needs no Content-Type
        raise unsupported_media_type()
    try:
        if empty_ok and not raw.strip():
            return model.model_validate({})
        parsed = model.model_validate_json(raw)
    except ValidationError as exc:
        if size > limit:
            raise _too_large(limit) from None  # no images to make room for it
        raise from_validation_error(exc) from None
    if size > limit and (media is None or size - media(parsed) > limit):
        raise _too_large(limit)  # larger than its images make room for
    return parsed
