"""The worker's own intake of work messages keeps the sender's trace (W3C `traceparent`)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import ids, subjects, topology
from inference import InferenceSettings, create_app
from inference.clock import InstantClock

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SENDER_SPAN = "b7ad6b7169203331"


async def test_a_pulled_request_is_processed_in_its_senders_trace(
    settings: InferenceSettings, memory: Any, bus: Any, make_request: Any
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = create_app(settings, clock=InstantClock(), tracer_provider=provider)
    await worker.start()
    request = make_request("Where does this trace go?")
    try:
        await bus.js.publish(
            subjects.GENERATE,
            request.model_dump_json().encode(),
            stream=topology.WORK_STREAM,
            headers={
                "Nats-Msg-Id": ids.msg_id("gen", request.conversation_id, request.user_message_id),
                "traceparent": f"00-{TRACE_ID}-{SENDER_SPAN}-01",
            },
        )
        await bus.wait_ended(request)
        await bus.wait_idle()
    finally:
        await worker.stop()

    finished = exporter.get_finished_spans()
    [work] = [s for s in finished if s.kind == SpanKind.CONSUMER and subjects.GENERATE in s.name]
    assert work.context.trace_id == int(TRACE_ID, 16)
    assert work.parent is not None and work.parent.span_id == int(SENDER_SPAN, 16)
    # The generation ran on under it: its provider call and its stored end.
    [call] = [s for s in finished if s.name == "provider.stream"]
    assert call.parent is not None and call.parent.span_id == work.context.span_id
    published = [s for s in finished if s.kind == SpanKind.PRODUCER]
    assert any(subjects.events(request.conversation_id) in s.name for s in published)
    assert {s.context.trace_id for s in published} == {int(TRACE_ID, 16)}
