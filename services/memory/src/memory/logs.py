"""Process-wide logging of `python -m memory`."""

from __future__ import annotations

import logging

from memory.settings import MemorySettings

__all__ = ["BROKER_LOGGER", "configure_logging"]

BROKER_LOGGER = "memory.nats"


def configure_logging(settings: MemorySettings) -> int:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # aiosqlite logs every statement with its parameters (message contents) at DEBUG.
    logging.getLogger("aiosqlite").setLevel(max(level, logging.INFO))
    # FastStream's own lines (subscribers started, pull loops restarted) only when
    # debugging; its errors still show.
    logging.getLogger(BROKER_LOGGER).setLevel(
        logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    )
    return level
