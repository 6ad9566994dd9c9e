"""`python -m inference`: one worker, configured from the environment."""

import asyncio
import logging

from inference.app import BROKER_LOGGER, create_app
from inference.settings import InferenceSettings

settings = InferenceSettings()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
# FastStream's own lines only when debugging; its errors still show.
if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
    logging.getLogger(BROKER_LOGGER).setLevel(logging.WARNING)
    # The SDKs' HTTP clients log every provider call at INFO.
    for name in ("httpx", "httpx2"):
        logging.getLogger(name).setLevel(logging.WARNING)
asyncio.run(create_app(settings).run(log_level=logging.getLevelName(settings.log_level)))
