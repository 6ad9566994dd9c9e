"""OpenTelemetry tracing of the inference, configured by the standard OTEL_* variables.

Off by default: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set
(`console` prints spans, `none` turns tracing off). The trace context travels in
the NATS message headers (W3C `traceparent`), so one trace spans the gateway's
request, its publish, the worker that consumes it, and the worker's provider calls
(`provider.stream` spans, see `failover.chain.Chain`).
"""

from __future__ import annotations

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider

from contracts import LivechatSettings
from runtime.telemetry import tracer_provider_from

__all__ = ["SERVICE_NAME", "install_tracing"]

SERVICE_NAME = "livechat-inference"


def install_tracing(
    broker: NatsBroker, settings: LivechatSettings, provider: TracerProvider | None = None
) -> None:
    """Trace what the broker consumes and publishes, as children of the sender's span."""
    provider = provider or tracer_provider_from(settings, SERVICE_NAME)
    if provider is not None:
        broker.add_middleware(NatsTelemetryMiddleware(tracer_provider=provider))
