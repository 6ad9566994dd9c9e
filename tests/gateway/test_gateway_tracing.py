"""One trace spans the gateway's request, its publish, the inference worker and its provider
call (OpenTelemetry)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from nats.aio.client import Client
from nats.aio.msg import Msg
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import subjects
from contracts.rpc import ContextReply
from gateway import GatewaySettings
from gateway.app import create_app
from inference import InferenceSettings
from inference import create_app as create_inference_app

TIMEOUT = 30.0


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def traced_system(
    settings: GatewaySettings,
    nats_url: str,
    nc: Client,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> AsyncIterator[str]:
    provider, _ = spans

    async def memory(msg: Msg) -> None:  # stands in for the memory service
        await msg.respond(ContextReply().model_dump_json().encode())

    await nc.subscribe(subjects.MEMORY_CONTEXT, cb=memory)
    worker = create_inference_app(
        InferenceSettings(
            nats_url=nats_url, demo_ttft_ms=0, demo_tokens_per_second=1000, demo_max_tokens=5
        ),
        tracer_provider=provider,
    )
    await worker.start()
    config = uvicorn.Config(
        create_app(settings, tracer_provider=provider),
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the gateway did not start"
        await asyncio.sleep(0.025)
    try:
        yield f"http://{settings.http_host}:{settings.http_port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        await worker.stop()


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[ReadableSpan]:
    chain = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        chain.append(span)
    return chain


async def test_a_message_is_one_trace_from_the_request_to_the_worker(
    traced_system: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = spans
    async with httpx.AsyncClient(base_url=traced_system, timeout=TIMEOUT) as client:
        response = await client.post("/v1/conversations/traced/messages", json={"content": "hi"})
    assert response.status_code == 200

    finished = exporter.get_finished_spans()
    [request] = [
        s
        for s in finished
        if s.kind == SpanKind.SERVER and s.name.startswith("POST /v1/conversations")
    ]
    consumed = [s for s in finished if s.kind == SpanKind.CONSUMER and subjects.GENERATE in s.name]
    assert consumed, [s.name for s in finished]
    [work] = consumed
    assert work.context.trace_id == request.context.trace_id
    by_id = {s.context.span_id: s for s in finished}
    assert request in _ancestors(work, by_id)
    # The worker's own publishes (tokens, done) are in the same trace, under its span.
    published = [
        s for s in finished if s.kind == SpanKind.PRODUCER and work in _ancestors(s, by_id)
    ]
    assert any(subjects.events("traced") in s.name for s in published)
    # And the provider call the worker made, named but without the prompt or answer.
    [call] = [s for s in finished if s.name == "provider.stream"]
    assert call.kind == SpanKind.CLIENT and work in _ancestors(call, by_id)
    assert dict(call.attributes or {}) == {
        "provider": "demo",
        "model": "demo",
        "attempt": 1,
        "tokens": 5,
        "finish_reason": "stop",
    }


async def test_credentials_in_the_query_string_never_reach_a_span(
    traced_system: str, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    _, exporter = spans
    query = "access_token=s3cret-token&x=1&API_KEY=s3cret-key"
    async with httpx.AsyncClient(base_url=traced_system, timeout=TIMEOUT) as client:
        response = await client.get(f"/v1/conversations?{query}")
    assert response.status_code in (200, 503)  # no memory here: the span is what counts

    finished = exporter.get_finished_spans()
    [request] = [s for s in finished if s.kind == SpanKind.SERVER]
    attributes = {k: str(v) for s in finished for k, v in (s.attributes or {}).items()}
    assert not [(k, v) for k, v in attributes.items() if "s3cret" in v]
    url = str((request.attributes or {}).get("http.url"))
    # The rest of the URL is kept: only the credentials' values are gone.
    assert url.endswith("/v1/conversations?access_token=REDACTED&x=1&API_KEY=REDACTED")
