"""`python -m memory`: run the memory service until SIGINT/SIGTERM."""

from __future__ import annotations

from memory.app import BROKER_LOGGER, create_app
from memory.settings import MemorySettings
from runtime.eventloop import run
from runtime.logs import configure_logging


def main() -> None:
    settings = MemorySettings()
    # aiosqlite logs every statement with its parameters (message contents).
    level = configure_logging(settings.log_level, broker_logger=BROKER_LOGGER, chatty=["aiosqlite"])
    run(create_app(settings).run(log_level=level))


if __name__ == "__main__":
    main()
