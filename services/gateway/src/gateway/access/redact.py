"""Keeping credentials out of the logs: uvicorn logs each path with its query string,
and WebSocket and EventSource clients send their token there (`?access_token=`)."""

from __future__ import annotations

import logging
import re

__all__ = ["CREDENTIAL_PARAMS", "RedactCredentials", "install_redaction", "redact"]

CREDENTIAL_PARAMS = ("access_token", "api_key")
_NAMES = "|".join(CREDENTIAL_PARAMS)
_PARAM = re.compile(rf"((?:^|[?&;\s])(?:{_NAMES})=)[^&;\s\"']*", re.IGNORECASE)
# The loggers uvicorn writes request lines to (HTTP access log; WebSocket handshakes).
_UVICORN_LOGGERS = ("uvicorn.access", "uvicorn.error")


def redact(text: str) -> str:
    return _PARAM.sub(r"\1[redacted]", text)


class RedactCredentials(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_redaction(names: tuple[str, ...] = _UVICORN_LOGGERS) -> None:
    """Idempotent; call after uvicorn configured its logging."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())
