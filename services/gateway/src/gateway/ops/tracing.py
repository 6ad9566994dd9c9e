"""OpenTelemetry tracing of the gateway, configured by the standard OTEL_* variables.

Off by default: on when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_TRACES_EXPORTER is set
(`console` prints spans, `none` turns tracing off). The trace context travels in
the NATS message headers (W3C `traceparent`), so one trace spans the gateway's
request, its publish, and the worker that consumes it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from opentelemetry.context import get_current
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span

from contracts import LivechatSettings
from runtime.telemetry import tracer_provider_from

__all__ = [
    "SERVICE_NAME",
    "instrument_app",
    "redact_query",
    "redact_span_credentials",
    "trace_headers",
]

SERVICE_NAME = "livechat-gateway"


def instrument_app(
    app: FastAPI, settings: LivechatSettings, provider: TracerProvider | None = None
) -> None:
    """Trace the app's requests when tracing is on (`provider`: tests pass their own)."""
    provider = provider or tracer_provider_from(settings, SERVICE_NAME)
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls="/healthz,/readyz,/metrics",
        server_request_hook=redact_span_credentials,
    )


# Query parameters that carry a credential (a browser's WebSocket or EventSource
# cannot send headers): their values never reach a span.
_CREDENTIAL_PARAM = re.compile(r"(?i)(^|[?&])(access_token|api_key)=[^&#]*")
_URL_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.query")


def redact_query(value: str) -> str:
    return _CREDENTIAL_PARAM.sub(r"\1\2=REDACTED", value)


def redact_span_credentials(span: Span | None, scope: dict[str, Any]) -> None:
    """The request span's URL attributes without credential query parameters."""
    if span is None or not span.is_recording():
        return
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            redacted = redact_query(value)
            if redacted != value:
                span.set_attribute(key, redacted)


def trace_headers(headers: dict[str, str]) -> dict[str, str]:
    """`headers` plus the current trace context (`traceparent`), when a span is active."""
    # An empty context (tracing off: no span, no baggage) injects nothing; the
    # propagators' walk to find that out was a share of every message's publish.
    if get_current():
        inject(headers)
    return headers
