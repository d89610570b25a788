"""The pieces ``make demo`` and ``make e2e`` are built from, each on its own (fast)."""

from __future__ import annotations

import uuid

import httpx
import pytest
import redis
import sqlalchemy as sa
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind
from sqlalchemy.engine import make_url

from simulators.demo import clear_redis, recreate_database
from simulators.otlp import OtlpReceiver
from simulators.scenario import WARM_TANK, Scenario, rules
from simulators.tcp_proxy import TcpProxy
from simulators.webhook import WebhookSink


def test_webhook_sink_records_json_and_can_refuse() -> None:
    with WebhookSink() as sink:
        sink.fail_next = 1
        body = {"alerts": [{"labels": {"alertname": "x"}, "status": "firing"}]}
        assert httpx.post(f"{sink.url}/alerts", json=body).status_code == 503
        assert httpx.post(f"{sink.url}/alerts", json=body).status_code == 200
        assert httpx.post(f"{sink.url}/raw", content=b"not json").status_code == 200
    assert [d.path for d in sink.deliveries] == ["/alerts", "/raw"]
    assert sink.alerts() == body["alerts"]
    assert sink.deliveries[1].body is None


def test_otlp_receiver_takes_real_exports_and_follows_links() -> None:
    with OtlpReceiver() as otlp:
        provider = TracerProvider(resource=Resource.create({"service.name": "svc-a"}))
        exporter = OTLPSpanExporter(endpoint=f"{otlp.url}/v1/traces")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("test")
        with (
            tracer.start_as_current_span("send x", kind=SpanKind.PRODUCER) as producer,
            tracer.start_as_current_span("child"),
        ):
            pass
        consumer = tracer.start_span("process x", links=[Link(producer.get_span_context())])
        consumer.end()
        provider.shutdown()
        spans = otlp.spans
        bad = httpx.post(f"{otlp.url}/v1/traces", content=b"\xff\x00garbage")
    assert bad.status_code == 400
    assert otlp.rejected == 1
    assert {s.name for s in spans} == {"send x", "child", "process x"}
    assert {s.service for s in spans} == {"svc-a"}
    producer_trace = format(producer.get_span_context().trace_id, "032x")
    # the linked consumer span (its own trace) is found under the producer's trace too
    assert {s.name for s in otlp.traces()[producer_trace]} == {"send x", "child", "process x"}


def test_tcp_proxy_cuts_and_restores_a_database(postgres_url: str) -> None:
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    engine = sa.create_engine(url.set(host="127.0.0.1", port=proxy.port), pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
            proxy.cut()
            with pytest.raises(sa.exc.OperationalError):
                conn.execute(sa.text("SELECT 1"))
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()  # refused while cut
        proxy.restore()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 2")).scalar() == 2
    finally:
        engine.dispose()
        proxy.stop()


@pytest.mark.parametrize("which", ["postgres", "mysql"])
def test_recreate_database_starts_empty(which: str, postgres_url: str, mysql_url: str) -> None:
    base = make_url(postgres_url if which == "postgres" else mysql_url)
    name = f"t_demo_{uuid.uuid4().hex[:10]}"
    url = base.set(database=name).render_as_string(hide_password=False)
    recreate_database(url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE leftover (id int)"))
        engine.dispose()
        recreate_database(url)  # drops it, with the table
        with engine.connect() as conn:
            tables = sa.inspect(conn).get_table_names()
        assert tables == []
    finally:
        engine.dispose()
        admin_db = "postgres" if which == "postgres" else "mysql"
        admin = sa.create_engine(base.set(database=admin_db), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def test_recreate_database_names_an_unreachable_server() -> None:
    with pytest.raises(SystemExit, match="cannot reach"):
        recreate_database("postgresql+psycopg://nobody@127.0.0.1:1/tributary_demo")


def test_clear_redis_deletes_only_its_prefix(redis_url: str) -> None:
    prefix = f"t_demo_{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(redis_url)
    try:
        client.mset({f"{prefix}{i}": i for i in range(1200)})
        client.set(f"other-{prefix}", 1)
        clear_redis(redis_url, prefix)
        assert list(client.scan_iter(match=f"{prefix}*")) == []
        assert client.get(f"other-{prefix}") == b"1"
    finally:
        client.delete(f"other-{prefix}")
        client.close()


def test_scenario_is_reproducible_and_covers_every_kind_of_alert() -> None:
    a, b = Scenario(seed=3), Scenario(seed=3)
    assert [a.temperature(WARM_TANK, s) for s in range(50)] == [
        b.temperature(WARM_TANK, s) for s in range(50)
    ]
    warm = [s for s in range(40) if a.temperature(WARM_TANK, s) > 28]
    assert warm == list(range(a.warm_for))
    sources = {r["source"] for r in rules()}
    assert sources == {"device.readings", "traffic.flushed", "usage.aggregated",
                       "usage.anomalies", "usage.forecasts"}  # fmt: skip
