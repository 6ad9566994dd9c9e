"""The durable pull consumer every worker shares."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig
from nats.js.errors import BadRequestError

from contracts import consumers
from inference.settings import InferenceSettings

__all__ = ["consumer_config", "ensure_consumer"]

log = logging.getLogger("inference")


def consumer_config(settings: InferenceSettings) -> ConsumerConfig:
    return consumers.INFERENCE.config(
        ack_wait=settings.ack_wait_seconds,
        # No server-side limit: it would count the deliveries that only waited for
        # memory, and drop requests during a long memory outage. The worker bounds the
        # deliveries that generate (`max_generation_attempts`, from the reply log).
        max_deliver=-1,
    )


async def ensure_consumer(js: JetStreamContext, settings: InferenceSettings) -> None:
    """Create the consumer, or update an existing one to this ack wait."""
    try:
        await js.add_consumer(consumers.INFERENCE.stream, consumer_config(settings))
    except BadRequestError as exc:
        # Another worker may have created it with a different, not updatable setting.
        log.warning("could not update consumer %s: %s", consumers.INFERENCE.durable, exc)
