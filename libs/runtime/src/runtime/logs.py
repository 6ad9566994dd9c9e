"""Process-wide logging of a service started with `python -m <service>`."""

from __future__ import annotations

import logging
from collections.abc import Iterable

__all__ = ["configure_logging"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(
    level_name: str, *, broker_logger: str | None = None, chatty: Iterable[str] = ()
) -> int:
    """Log at `level_name` (LIVECHAT_LOG_LEVEL; unknown names: INFO) and return the level.

    `broker_logger`: FastStream's own lines (subscribers started, pull loops restarted)
    only when debugging; its errors still show. `chatty`: libraries that log every call
    (the SDKs' HTTP clients) or statement parameters (aiosqlite: message contents); only
    their warnings and errors show, at any level.
    """
    level = logging.getLevelNamesMapping().get(level_name.upper(), logging.INFO)
    logging.basicConfig(level=level, format=_FORMAT)
    if broker_logger is not None:
        logging.getLogger(broker_logger).setLevel(
            logging.DEBUG if level <= logging.DEBUG else logging.WARNING
        )
    for name in chatty:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    return level
