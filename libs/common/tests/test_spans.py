"""Consumer spans built by tributary.spans export exactly what the SDK's spans export."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode

from tributary import spans as spans_module
from tributary.events import Event
from tributary.spans import ConsumerSpans, FastSpan, comparable
from tributary.tracing import inject_current, parse_traceparent, remote_parent, start_consumer_span

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"

Provider = tuple[TracerProvider, InMemorySpanExporter]


def make_provider(**kwargs: object) -> Provider:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}), **kwargs)  # type: ignore[arg-type]
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
def provider() -> Iterator[Provider]:
    made = make_provider()
    yield made
    made[0].shutdown()


def event(traceparent: str | None = PARENT, tracestate: str | None = None) -> Event:
    return Event(
        type="device.read",
        data={"value": 1},
        source="test",
        traceparent=traceparent,
        tracestate=tracestate,
    )


def both_ways(provider: Provider, ev: Event, use: Callable[[Span], None]) -> list[ReadableSpan]:
    """The span of ``ev`` made by ConsumerSpans, then by the SDK, each used by ``use``."""
    tracer_provider, exporter = provider
    tracer = tracer_provider.get_tracer("tributary")
    spans = ConsumerSpans(tracer, "readings", "alert")
    assert spans.fast
    for made in (spans.start(ev), start_consumer_span(tracer, "readings", "alert", ev)):
        use(made)
        made.end()
    finished = exporter.get_finished_spans()
    assert isinstance(finished[0], FastSpan)  # ended, it is its own readable span
    assert type(finished[1]) is ReadableSpan  # the SDK hands over a copy
    return list(finished)


def test_fast_span_exports_what_the_sdk_span_exports(provider: Provider) -> None:
    def use(span: Span) -> None:
        span.set_attribute("tributary.outcome", "ack")

    fast, sdk = both_ways(provider, event(tracestate="vendor=abc"), use)
    assert comparable(fast) == comparable(sdk)
    assert fast.kind is SpanKind.CONSUMER
    assert fast.parent is not None
    assert sdk.parent is not None
    assert fast.parent == sdk.parent
    assert fast.parent.is_remote
    assert fast.context is not None
    assert sdk.context is not None
    assert fast.context.trace_id == sdk.context.trace_id == int(TRACE_ID, 16)
    assert fast.context.trace_flags == sdk.context.trace_flags
    assert fast.context.trace_state == sdk.context.trace_state
    assert not fast.context.is_remote
    assert fast.context.span_id != sdk.context.span_id
    assert dict(fast.attributes or {}) == dict(sdk.attributes or {})
    assert fast.resource == sdk.resource
    assert fast.instrumentation_scope == sdk.instrumentation_scope
    assert fast.status.status_code is sdk.status.status_code is StatusCode.UNSET
    assert fast.start_time is not None
    assert fast.end_time is not None
    assert fast.start_time <= fast.end_time
    assert (fast.dropped_attributes, fast.dropped_events, fast.dropped_links) == (0, 0, 0)
    assert fast.to_json()


def test_what_a_handler_does_with_its_span_is_exported_the_same(provider: Provider) -> None:
    def use(span: Span) -> None:
        span.set_attribute("rows", 3)
        span.set_attribute("nodes", ["a", "b"])  # a sequence: cleaned to a tuple
        span.set_attribute("mapping", {"nested": 1})  # kept, as the SDK keeps it
        span.set_attribute("bad", object())  # type: ignore[arg-type]  # None, with a warning
        span.set_attributes({"ratio": 0.5, "ok": True})
        span.add_event("flushed", {"count": 2}, timestamp=1)
        span.record_exception(ValueError("bad value"), timestamp=2)
        span.set_status(Status(StatusCode.ERROR, "boom"))
        span.set_status(StatusCode.UNSET)  # ignored: UNSET is never set
        span.update_name("process readings (renamed)")
        span.add_link(parse_traceparent(PARENT), {"why": "test"})  # type: ignore[arg-type]

    fast, sdk = both_ways(provider, event(), use)
    assert comparable(fast) == comparable(sdk)
    assert fast.name == "process readings (renamed)"
    assert dict(fast.attributes or {})["nodes"] == ("a", "b")
    assert dict(fast.attributes or {}) == dict(sdk.attributes or {})
    assert [e.name for e in fast.events] == ["flushed", "exception"]
    assert fast.status.status_code is StatusCode.ERROR
    assert len(fast.links) == 1


def test_an_ended_span_refuses_changes(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    tracer = provider[0].get_tracer("tributary")
    span = ConsumerSpans(tracer, "readings", "alert").start(event())
    span.end()
    with caplog.at_level(logging.WARNING):
        span.set_attribute("late", 1)
        span.end()
    assert "late" not in (provider[1].get_finished_spans()[0].attributes or {})
    assert not span.is_recording()
    assert len(provider[1].get_finished_spans()) == 1
    assert "ended span" in caplog.text


def test_attributes_past_the_limit_are_dropped_as_by_the_sdk(provider: Provider) -> None:
    def use(span: Span) -> None:
        for i in range(200):
            span.set_attribute(f"a{i}", i)

    fast, sdk = both_ways(provider, event(), use)
    assert len(fast.attributes or {}) == len(sdk.attributes or {}) == 128


@pytest.mark.parametrize("flags", ["00", "02"])
def test_an_unsampled_parent_gives_an_unsampled_child(provider: Provider, flags: str) -> None:
    ev = event(f"00-{TRACE_ID}-b7ad6b7169203331-{flags}")
    tracer = provider[0].get_tracer("tributary")
    fast = ConsumerSpans(tracer, "readings", "alert").start(ev)
    sdk = start_consumer_span(tracer, "readings", "alert", ev)
    assert isinstance(fast, NonRecordingSpan)
    assert isinstance(sdk, NonRecordingSpan)
    fast_ctx, sdk_ctx = fast.get_span_context(), sdk.get_span_context()
    assert fast_ctx.trace_id == sdk_ctx.trace_id == int(TRACE_ID, 16)
    assert fast_ctx.trace_flags == sdk_ctx.trace_flags
    assert not fast_ctx.trace_flags.sampled
    assert fast_ctx.span_id != int("b7ad6b7169203331", 16)
    fast.end()
    assert provider[1].get_finished_spans() == ()


def test_the_random_trace_id_flag_is_inherited(provider: Provider) -> None:
    fast, sdk = both_ways(provider, event(f"00-{TRACE_ID}-b7ad6b7169203331-03"), lambda s: None)
    assert fast.context is not None
    assert sdk.context is not None
    assert int(fast.context.trace_flags) == int(sdk.context.trace_flags) == 3


def test_the_handler_runs_inside_the_fast_span(provider: Provider) -> None:
    tracer = provider[0].get_tracer("tributary")
    span = ConsumerSpans(tracer, "readings", "alert").start(event())
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        with tracer.start_as_current_span("inside handler") as child:
            outgoing = event(None)
            inject_current(outgoing)
    finally:
        otel_context.detach(token)
    span.end()
    ctx = span.get_span_context()
    finished = {s.name: s for s in provider[1].get_finished_spans()}
    inner = finished["inside handler"]
    assert inner.parent is not None
    assert inner.parent.span_id == ctx.span_id
    assert inner.context is not None
    assert inner.context.trace_id == ctx.trace_id
    child_ctx = child.get_span_context()
    assert outgoing.traceparent == f"00-{TRACE_ID}-{child_ctx.span_id:016x}-01"


def test_an_event_without_trace_context_starts_a_trace_through_the_sdk(
    provider: Provider,
) -> None:
    tracer = provider[0].get_tracer("tributary")
    span = ConsumerSpans(tracer, "readings", "alert").start(event(None))
    assert isinstance(span, SdkSpan)
    span.end()
    (finished,) = provider[1].get_finished_spans()
    assert finished.parent is None
    assert (finished.attributes or {})["messaging.destination.name"] == "readings"


@pytest.mark.parametrize(
    ("kwargs", "fast"),
    [
        ({}, True),
        ({"sampler": ParentBased(TraceIdRatioBased(0.5))}, True),  # roots decided by ratio
        ({"sampler": ALWAYS_ON}, False),  # ignores the parent's flag
        ({"span_limits": SpanLimits(max_span_attribute_length=16)}, False),
        ({"span_limits": SpanLimits(max_span_attributes=8)}, False),
    ],
)
def test_the_fast_path_is_taken_only_where_it_is_exact(
    kwargs: dict[str, object], fast: bool
) -> None:
    provider, exporter = make_provider(**kwargs)
    try:
        spans = ConsumerSpans(provider.get_tracer("tributary"), "readings", "alert")
        assert spans.fast is fast
        span = spans.start(event())
        span.end()
        (finished,) = exporter.get_finished_spans()
        assert isinstance(finished, FastSpan) is fast
        assert finished.parent is not None
        assert finished.parent.span_id == int("b7ad6b7169203331", 16)
    finally:
        provider.shutdown()


def test_a_tracer_that_is_not_the_sdks_is_used_as_it_is() -> None:
    spans = ConsumerSpans(trace.NoOpTracer(), "readings", "alert")
    assert not spans.fast
    assert not spans.start(event()).is_recording()


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        f"00-{TRACE_ID.upper()}-b7ad6b7169203331-01",  # W3C: lowercase hex only
        f"ff-{TRACE_ID}-b7ad6b7169203331-01",  # forbidden version
        f"00-{'0' * 32}-b7ad6b7169203331-01",  # invalid trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # invalid parent id
        f"00-{TRACE_ID}-b7ad6b71692 3331-01",
        f"00_{TRACE_ID}-b7ad6b7169203331-01",
        f"00-{TRACE_ID}-b7ad6b7169203331-01-extra",
    ],
)
def test_invalid_traceparents_are_refused(header: str | None) -> None:
    assert parse_traceparent(header) is None


def test_a_traceparent_is_parsed_with_its_tracestate() -> None:
    ctx = parse_traceparent(PARENT, "vendor=abc,other=1")
    assert ctx is not None
    assert ctx.trace_id == int(TRACE_ID, 16)
    assert ctx.span_id == int("b7ad6b7169203331", 16)
    assert ctx.is_remote
    assert ctx.trace_flags.sampled
    assert ctx.trace_state.to_header() == "vendor=abc,other=1"


def test_remote_parent_parses_each_context_once_and_as_parse_traceparent_does() -> None:
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    first = remote_parent(header, "k=v")
    assert first == parse_traceparent(header, "k=v")
    assert remote_parent(header, "k=v") is first
    assert remote_parent(header, None) == parse_traceparent(header, None) != first
    assert remote_parent("00-bad", None) is None
    assert remote_parent(None, None) is None


def test_the_fast_path_is_proven_exact_once_and_falls_back_when_it_is_not(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, provider: Provider
) -> None:
    """The SDK installed here passes the start-up proof; an SDK that fails it (here: a
    probe that finds a difference) gets the SDK's spans, with one warning."""
    assert spans_module.fast_path_verified()
    monkeypatch.setattr(spans_module, "_probe", lambda: False)
    spans_module.fast_path_verified.cache_clear()
    try:
        tracer = provider[0].get_tracer("tributary")
        assert not ConsumerSpans(tracer, "readings", "alert").fast
        assert "fast consumer spans disabled" in caplog.text
        made = ConsumerSpans(tracer, "readings", "alert").start(event())
        assert not isinstance(made, FastSpan)
        made.end()
    finally:
        spans_module.fast_path_verified.cache_clear()
        monkeypatch.undo()
    assert spans_module.fast_path_verified()


NEWEST_SDK_CHECK = """
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from importlib.metadata import version
from tributary import spans as spans_module
from tributary.events import Event
from tributary.spans import ConsumerSpans, comparable, fast_path_verified
from tributary.tracing import start_consumer_span

exporter = InMemorySpanExporter()
provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("tributary")
event = Event(type="t", data={}, source="s",
              traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
for span in (ConsumerSpans(tracer, "s", "g").start(event),
             start_consumer_span(tracer, "s", "g", event)):
    span.set_attribute("tributary.outcome", "ack")
    span.end()
made, made_by_sdk = exporter.get_finished_spans()
assert comparable(made) == comparable(made_by_sdk), "spans differ"
print(version("opentelemetry-sdk"), "fast" if fast_path_verified() else "sdk")
"""


@pytest.mark.slow
def test_consumer_spans_match_the_sdks_with_the_newest_sdk_release_on_pypi() -> None:
    """Against the newest opentelemetry-sdk on PyPI (not the locked one): the fast path
    is either proven exact there or off; either way the exported span is the SDK's."""
    with urllib.request.urlopen("https://pypi.org/pypi/opentelemetry-sdk/json", timeout=30) as r:
        newest = json.load(r)["info"]["version"]
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [shutil.which("uv") or "uv", "run", "--isolated", "--no-project", "--quiet",
         "--with-editable", str(root / "libs/common"),
         "--with", f"opentelemetry-sdk=={newest}",
         "--with", f"opentelemetry-exporter-otlp-proto-http=={newest}",
         "python", "-c", NEWEST_SDK_CHECK],
        capture_output=True, text=True, timeout=600, check=False, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    sdk_version, path = done.stdout.split()
    assert sdk_version == newest
    assert path in ("fast", "sdk")
