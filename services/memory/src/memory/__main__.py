"""`python -m memory`: run the memory service until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from memory.app import create_app
from memory.logs import configure_logging
from memory.settings import MemorySettings


def main() -> None:
    settings = MemorySettings()
    level = configure_logging(settings)
    asyncio.run(create_app(settings).run(log_level=level))


if __name__ == "__main__":
    main()
