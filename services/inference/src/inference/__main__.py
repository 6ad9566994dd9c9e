"""`python -m inference`: one worker, configured from the environment."""

from inference.app import BROKER_LOGGER, create_app
from inference.settings import InferenceSettings
from runtime.collection import tune_gc
from runtime.config_errors import settings_or_exit
from runtime.eventloop import run
from runtime.logs import configure_logging
from runtime.startup import announce_nats

settings = settings_or_exit(InferenceSettings, "inference", "metrics_port")
# The SDKs' HTTP clients log every provider call at INFO.
level = configure_logging(
    settings.log_level, broker_logger=BROKER_LOGGER, chatty=["httpx", "httpx2"]
)
announce_nats("inference", settings)
app = create_app(settings)
tune_gc()
run(app.run(log_level=level))
