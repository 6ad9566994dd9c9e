"""`python -m inference`: one worker, configured from the environment."""

import asyncio
import logging

from inference.app import create_app
from inference.settings import InferenceSettings

settings = InferenceSettings()
logging.basicConfig(
    level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s"
)
asyncio.run(create_app(settings).run(log_level=logging.getLevelName(settings.log_level)))
