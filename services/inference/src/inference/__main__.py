"""`python -m inference`: one worker, configured from the environment."""

from inference.app import BROKER_LOGGER, create_app
from inference.settings import InferenceSettings
from runtime.eventloop import run
from runtime.logs import configure_logging

settings = InferenceSettings()
# The SDKs' HTTP clients log every provider call at INFO.
level = configure_logging(
    settings.log_level, broker_logger=BROKER_LOGGER, chatty=["httpx", "httpx2"]
)
run(create_app(settings).run(log_level=level))
