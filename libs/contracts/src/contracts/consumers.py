"""The durable consumers of the streams: what each one takes, and its ConsumerConfig."""

from __future__ import annotations

import dataclasses

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts import subjects, topology

__all__ = ["ACCOUNT", "INFERENCE", "MEMORY", "USAGE", "DurableConsumer"]

# The NATS account the streams and consumers live in: the global one, since the
# services log in as users without accounts (deploy/nats/auth.conf). Autoscalers that
# read a consumer's pending count from the monitoring endpoint name it.
ACCOUNT = "$G"


@dataclasses.dataclass(frozen=True, slots=True)
class DurableConsumer:
    """A durable pull consumer on `stream` taking `filter_subject` (and `also`, further
    subjects: nats-server 2.10+), acked explicitly.

    `named`: created under its name too (JetStream's CONSUMER.CREATE API), not by its
    durable name alone.
    """

    stream: str
    durable: str
    filter_subject: str
    named: bool = True
    also: tuple[str, ...] = ()

    def config(
        self,
        *,
        ack_wait: float,
        max_ack_pending: int | None = None,
        max_deliver: int | None = None,
    ) -> ConsumerConfig:
        """Its configuration with the owning service's settings (None: the server's
        default). Delivery starts at the stream's first message; every message is acked."""
        several = [self.filter_subject, *self.also] if self.also else None
        return ConsumerConfig(
            name=self.durable if self.named else None,
            durable_name=self.durable,
            filter_subject=None if several else self.filter_subject,
            filter_subjects=several,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            max_deliver=max_deliver,
        )


# Memory stores every chat event (user messages, finished and failed replies).
MEMORY = DurableConsumer(topology.CHAT_STREAM, topology.MEMORY_CONSUMER, subjects.CHAT_ALL)
# Usage records every usage report in its ledger: those on each reply's own subject,
# and those on the one subject of before (left in the stream by an older worker).
USAGE = DurableConsumer(
    topology.USAGE_STREAM,
    topology.USAGE_CONSUMER,
    subjects.USAGE_REPORTED_ALL,
    also=(subjects.USAGE_REPORTED,),
)
# The work queue, shared by every inference worker (each pulls it by durable name).
INFERENCE = DurableConsumer(
    topology.WORK_STREAM, topology.INFERENCE_CONSUMER, subjects.GENERATE, named=False
)
