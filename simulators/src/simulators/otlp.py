"""An OTLP/HTTP trace receiver: what a collector would get, kept in memory for tests.

Services export with ``OTEL_EXPORTER_OTLP_ENDPOINT=<receiver.url>``; they POST
``ExportTraceServiceRequest`` protobufs (optionally gzip/deflate) to ``/v1/traces``.
Each span is flattened to :class:`ReceivedSpan` (hex ids, service name, links).
``python -m simulators.otlp --port 4318`` runs one as a process (a container of the
compose end-to-end test), serving what it got on ``GET /spans``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import threading
import zlib
from collections import defaultdict
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from simulators.http_thread import BackgroundHttpServer, QuietHandler


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    links: tuple[tuple[str, str], ...]


def _decode_body(raw: bytes, encoding: str | None) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(raw)
    if encoding == "deflate":
        return zlib.decompress(raw)
    return raw


def parse_export(raw: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(raw)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        service = next(
            (
                a.value.string_value
                for a in resource_spans.resource.attributes
                if a.key == "service.name"
            ),
            "",
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        links=tuple((ln.trace_id.hex(), ln.span_id.hex()) for ln in span.links),
                    )
                )
    return spans


class OtlpReceiver(BackgroundHttpServer):
    """``with OtlpReceiver() as otlp: env OTEL_EXPORTER_OTLP_ENDPOINT=otlp.url``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._spans: list[ReceivedSpan] = []
        self.rejected = 0
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                raw = self.read_body()
                if self.path.rstrip("/") != "/v1/traces":
                    self.reply(404)
                    return
                try:
                    spans = parse_export(_decode_body(raw, self.headers.get("Content-Encoding")))
                except Exception:
                    with receiver._lock:
                        receiver.rejected += 1
                    self.reply(400)
                    return
                with receiver._lock:
                    receiver._spans.extend(spans)
                body = ExportTraceServiceResponse().SerializeToString()
                self.reply(200, body, "application/x-protobuf")

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/spans":
                    self.reply(404)
                    return
                self.reply_json([dataclasses.asdict(span) for span in receiver.spans])

        super().__init__(Handler, host, port)

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        """Spans by trace id, following links as well: a consumer span that links a
        producer's context (batch handlers) joins the producer's trace."""
        by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
        for span in self.spans:
            by_trace[span.trace_id].append(span)
            for trace_id, _ in span.links:
                if trace_id != span.trace_id:
                    by_trace[trace_id].append(span)
        return dict(by_trace)

    def services_per_trace(self) -> dict[str, set[str]]:
        return {tid: {s.service for s in spans} for tid, spans in self.traces().items()}


def main(argv: list[str] | None = None) -> None:
    """``python -m simulators.otlp --host 0.0.0.0 --port 4318``: receive until killed."""
    parser = argparse.ArgumentParser(prog="python -m simulators.otlp", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    with OtlpReceiver(args.host, args.port) as receiver:
        print(f"OTLP/HTTP receiver on {receiver.url}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
