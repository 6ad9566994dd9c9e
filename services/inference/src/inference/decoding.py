"""Decoding of work requests; an undecodable one is terminated, never redelivered forever."""

from __future__ import annotations

import logging
from typing import Any

from faststream.message import StreamMessage
from pydantic import ValidationError

from contracts.events import GenerationRequested

__all__ = ["UndecodableRequest", "decode_request", "read_request"]

log = logging.getLogger("inference")


class UndecodableRequest(ValueError):
    """A work message that is not a `GenerationRequested`; names error types, never input."""


def read_request(data: bytes) -> GenerationRequested:
    """The request in a work message's payload; logs (error types only) what is not one.

    The caller terminates a message that raises: with manual acks nobody else would
    settle it, and it would fail on every redelivery.
    """
    try:
        return GenerationRequested.model_validate_json(data)
    except ValidationError as error:
        problems = sorted({f"{'.'.join(map(str, e['loc']))}: {e['type']}" for e in error.errors()})
        log.error("terminated an invalid work request (%s)", "; ".join(problems))
        # `from None`: the pydantic error would print the payload with the traceback.
        raise UndecodableRequest("invalid generation request") from None


async def decode_request(message: StreamMessage[Any]) -> GenerationRequested:
    """FastStream's decoder of the work subscriber (`inference.handlers`)."""
    try:
        return read_request(message.body)
    except UndecodableRequest:
        await message.reject()
        raise
