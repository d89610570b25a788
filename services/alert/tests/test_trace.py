"""One trace from a device.readings publish to the webhook call it causes."""

from __future__ import annotations

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from .conftest import Hook
from .harness import Harness


async def test_one_trace_from_reading_to_webhook(
    harness: Harness, hook: Hook, exporter: InMemorySpanExporter
) -> None:
    harness.add_receiver(name="ops", kind="webhook", url=hook.url)
    harness.add_rule(operator=">", threshold=30, receivers=["ops"])
    await harness.reading("aq-1", 35, harness.clock())
    await harness.drain()
    await harness.relay()
    await harness.notify()
    spans = exporter.get_finished_spans()
    (publish,) = [s for s in spans if s.name == "send device.readings"]
    trace_id = publish.context.trace_id
    in_trace = {s.name for s in spans if s.context.trace_id == trace_id}
    assert {
        "send device.readings",
        "process device.readings",
        "send alerts",
        "notify webhook",
    } <= in_trace
    (http_call,) = [
        s for s in spans if s.kind is SpanKind.CLIENT and s.context.trace_id == trace_id
    ]
    assert http_call.attributes is not None
    assert (
        http_call.attributes.get("http.request.method", http_call.attributes.get("http.method"))
        == "POST"
    )
    # and the trace context reached the receiver over the wire
    (call,) = hook.calls
    assert call["headers"]["traceparent"].split("-")[1] == f"{trace_id:032x}"
    (alert_event,) = await harness.alerts()
    assert alert_event.traceparent is not None
    assert alert_event.traceparent.split("-")[1] == f"{trace_id:032x}"
