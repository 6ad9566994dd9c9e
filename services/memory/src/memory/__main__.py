"""`python -m memory`: run the memory service until SIGINT/SIGTERM."""

from __future__ import annotations

from memory.app import BROKER_LOGGER, create_app
from memory.settings import MemorySettings
from runtime.collection import tune_gc
from runtime.config_errors import settings_or_exit
from runtime.eventloop import run
from runtime.logs import configure_logging
from runtime.startup import announce_nats


def main() -> None:
    settings = settings_or_exit(MemorySettings, "memory", "metrics_port")
    # aiosqlite logs every statement with its parameters (message contents).
    level = configure_logging(settings.log_level, broker_logger=BROKER_LOGGER, chatty=["aiosqlite"])
    announce_nats("memory", settings)
    app = create_app(settings)
    tune_gc()
    run(app.run(log_level=level))


if __name__ == "__main__":
    main()
