"""The OpenTelemetry tracer provider every service builds from the standard OTEL_* variables.

Off by default: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set
(`console` prints spans, `none` turns tracing off). OpenTelemetry is imported only
when tracing is on, so contracts does not depend on it: a service that traces
depends on `livechat-contracts[telemetry]` (or on the SDK and exporter directly).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from contracts.settings import LivechatSettings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["tracer_provider_from"]


def tracer_provider_from(settings: LivechatSettings, service_name: str) -> TracerProvider | None:
    """A provider exporting as OTEL_* says, or None when tracing is off.

    `service_name`: the default `service.name`; OTEL_SERVICE_NAME overrides it.
    """
    if not settings.tracing_enabled():
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if (settings.otel_traces_exporter or "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_* itself
    # OTEL_RESOURCE_ATTRIBUTES is merged in by Resource.create.
    name = settings.otel_service_name or service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
