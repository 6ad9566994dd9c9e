"""OpenTelemetry tracing of the inference, configured by the standard OTEL_* variables.

Off by default: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set
(`console` prints spans, `none` turns tracing off). The trace context travels in
the NATS message headers (W3C `traceparent`), so one trace spans the gateway's
request, its publish, the worker that consumes it (`consuming`), and the worker's
publishes and provider calls (`provider.stream` spans, see `failover.chain.Chain`).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import LivechatSettings
from runtime.telemetry import tracer_provider_from

__all__ = ["SERVICE_NAME", "consuming", "install_tracing"]

SERVICE_NAME = "livechat-inference"

_PROPAGATOR = TraceContextTextMapPropagator()


def install_tracing(
    broker: NatsBroker, settings: LivechatSettings, provider: TracerProvider | None = None
) -> None:
    """Trace what the broker consumes and publishes, as children of the sender's span."""
    provider = provider or tracer_provider_from(settings, SERVICE_NAME)
    if provider is not None:
        broker.add_middleware(NatsTelemetryMiddleware(tracer_provider=provider))


def consuming(tracer: Tracer, message: Msg) -> AbstractContextManager[Span]:
    """The span of a message pulled without FastStream, current while it is taken in:
    a child of the sender's span (its headers), named as FastStream names its own."""
    return tracer.start_as_current_span(
        f"{message.subject} process",
        context=_PROPAGATOR.extract(message.headers or {}),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "nats",
            "messaging.operation": "process",
            "messaging.message.payload_size_bytes": len(message.data),
            "messaging.destination_publish.name": message.subject,
        },
    )
