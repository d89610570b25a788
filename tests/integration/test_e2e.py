"""The whole system end to end, with faults: ``make e2e``.

All five services run as separate processes (``python -m <pkg> run``) against a
Redis of the run's own, PostgreSQL behind a cuttable proxy and a MariaDB database,
exporting spans to an in-test OTLP receiver. The scenario of
:mod:`simulators.scenario` runs with a fixed seed while the test

1. SIGKILLs each service once and restarts it,
2. restarts Redis,
3. takes PostgreSQL away for 20 s,
4. injects two malformed entries,

then lets the system settle and compares every service's tables with an oracle
computed from what the generators wrote. The run happens once (module fixture);
each test checks one promise of it.

Every service runs as its own least-privilege user, as docs/security.md tells an
operator to make them (:mod:`tributary.privileges`): a Redis ACL user limited to its
keys and commands, a PostgreSQL role that owns only its schema (traffic_sync: a MariaDB
user with rights on its database only). Whatever a service lacks shows up as a failure
here. Every secret the run handed out (passwords, tokens, keys, the Outline secret
paths, the webhook's HMAC key and header) is then looked for in every log line,
``/metrics`` page, API response and dead letter.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import sqlalchemy as sa

from simulators.checks import (
    catalog_streams,
    cut_postgres,
    pg_rows,
    restart_each,
    restart_redis,
    wait_oracle,
    wait_settled,
)
from simulators.checks import (
    engine as checks_engine,
)
from simulators.otlp import OtlpReceiver
from simulators.ports import free_port
from simulators.redis_server import RedisServer
from simulators.scenario import (
    BUSY_MERCHANT,
    WARM_TANK,
    Scenario,
    rules,
)
from simulators.stack import Stack, poll
from simulators.system import SERVICES, SystemConfig
from simulators.webhook import Delivery
from traffic_sync.counters import record_traffic
from tributary import catalog
from tributary.events import decode
from tributary.keys import Keys
from tributary_testing.accounts import Accounts
from tributary_testing.waiting import wait_until

#: the whole run happens in the module fixture, charged to the first test
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]
Databases = Any  # tests/integration/conftest.py: urls, schemas, the PostgreSQL proxy

PREFIX = "e2e:"
#: a node of its own for the trace probe: a tiny limit, so one write fires an alert
PROBE_NODE = 999
MALFORMED = {
    catalog.DEVICE_READINGS: {"type": "device.reading.recorded", "data": "{not json"},
    catalog.USAGE_AGGREGATED: {"hello": "world"},
}


@dataclass
class Run:
    stack: Stack
    otlp: OtlpReceiver
    timings: dict[str, float] = field(default_factory=dict)
    streams: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    dlq: dict[str, int] = field(default_factory=dict)
    traffic_rows: dict[str, tuple[int, int]] = field(default_factory=dict)
    usage_rows: dict[tuple[str, str, str], int] = field(default_factory=dict)
    alert_events: list[dict[str, Any]] = field(default_factory=list)
    gmail: dict[str, Any] = field(default_factory=dict)
    snapshot: dict[str, Any] = field(default_factory=dict)
    alive_at_end: dict[str, bool] = field(default_factory=dict)
    exit_codes: dict[str, int] = field(default_factory=dict)
    probe: Delivery | None = None
    logs: dict[str, str] = field(default_factory=dict)
    #: what the services showed the outside: /metrics pages, API responses, dead letters
    outputs: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    #: who was connected near the end: Redis users, PostgreSQL and MariaDB users
    redis_users: set[str] = field(default_factory=set)
    db_users: set[str] = field(default_factory=set)
    accounts: Accounts | None = None


# -- the run ----------------------------------------------------------------------------


async def _inject_malformed(redis: aioredis.Redis, keys: Keys) -> None:
    for stream, fields in MALFORMED.items():
        await redis.xadd(keys.stream(stream), fields)  # type: ignore[arg-type]


async def stream_entries(redis: aioredis.Redis, keys: Keys, name: str) -> list[dict[str, str]]:
    entries: Any = await redis.xrange(keys.stream(name))
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


def payload(fields: dict[str, str]) -> dict[str, Any]:
    """The JSON payload of a (valid) stream entry."""
    decode(fields)  # raises on anything malformed
    data: dict[str, Any] = json.loads(fields["data"])
    return data


async def _trace_probe(stack: Stack, run: Run) -> None:
    """One node over its limit, alone in its flush: traffic_sync → alert → webhook.

    Alone, so alert reads its event by itself and continues its trace (a batch of
    several events gets a trace of its own, linked to each producer's)."""
    keys = Keys(PREFIX)
    await wait_settled(stack.redis, keys, "the generators' last writes consumed")
    r = await stack.http.put(
        f"{stack.url('traffic_sync')}/nodes/{PROBE_NODE}/limit", json={"limit_bytes": 1000}
    )
    r.raise_for_status()
    await record_traffic(stack.redis, PROBE_NODE, 5000, 5000, keys=stack.scenario.traffic_keys)
    totals = stack.scenario.oracle.traffic[str(PROBE_NODE)]
    totals[0] += 5000
    totals[1] += 5000

    async def delivered() -> bool:
        for d in stack.webhook.deliveries:
            alerts = d.body.get("alerts", []) if isinstance(d.body, dict) else []
            if any(a["labels"].get("node_id") == str(PROBE_NODE) for a in alerts):
                run.probe = d
                return True
        return False

    await poll("the probe node's alert at the webhook", delivered, 90)


def _database_users(dbs: Databases) -> list[str]:
    users = pg_rows(dbs.postgres_url, "public", "SELECT DISTINCT usename FROM pg_stat_activity")
    engine = checks_engine(dbs.mysql_url)
    with engine.connect() as conn:
        query = "SELECT DISTINCT user FROM information_schema.processlist"
        users += list(conn.execute(sa.text(query)))
    engine.dispose()
    return [str(row[0]) for row in users]


async def stream_entries_raw(redis: aioredis.Redis, key: str) -> list[tuple[Any, Any]]:
    return list(await redis.xrange(key) or [])


async def _unreachable_server(stack: Stack) -> str:
    """An Outline server whose apiUrl (and its secret path) leads nowhere: every
    collection fails, and the failure is recorded without the URL."""
    secret = f"unreachable-{uuid.uuid4().hex}"
    body = {"name": "unreachable", "apiUrl": f"https://127.0.0.1:{free_port()}/{secret}",
            "certSha256": "AB" * 32}  # fmt: skip
    r = await stack.http.post(f"{stack.url('snapshot')}/servers", json=body)
    r.raise_for_status()
    return secret


async def _outputs(stack: Stack, keys: Keys) -> dict[str, str]:
    """Each service's /metrics, every GET route of its API without a path parameter
    (from its /openapi.json) and a few with, and every dead letter."""
    found: dict[str, str] = {}
    for service in SERVICES:
        base = stack.url(service)
        found[f"{service} /metrics"] = (await stack.http.get(f"{base}/metrics")).text
        spec = (await stack.http.get(f"{base}/openapi.json")).json()
        paths = [p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p]
        assert len(paths) >= 2, f"{service}: no API routes found in {spec['paths']}"
        for path in paths:
            r = await stack.http.get(f"{base}{path}")
            found[f"{service} GET {path}"] = f"{r.status_code} {r.text}"
    for server_id in stack.server_ids:
        r = await stack.http.get(f"{stack.url('snapshot')}/servers/{server_id}")
        found[f"snapshot GET /servers/{server_id}"] = r.text
    for name in catalog_streams():
        for entry_id, fields in await stream_entries_raw(stack.redis, keys.dlq(name)):
            found[f"dead letter {entry_id!r} of {name}"] = repr(fields)
    return found


async def _every_kind_fired(stack: Stack) -> bool:
    names = {a["labels"].get("alertname") for a in stack.webhook.alerts()}
    resolved = any(
        a["labels"].get("subject") == WARM_TANK and a.get("status") == "resolved"
        for a in stack.webhook.alerts()
    )
    return resolved and {r["name"] for r in rules()} <= names


async def _gmail_done(stack: Stack) -> bool:
    return bool((await stack.gmail_job())["status"] == "completed")


async def drive(stack: Stack, run: Run, redis_server: RedisServer, dbs: Databases) -> None:
    keys = Keys(PREFIX)
    run.timings["start"] = time.monotonic()
    await stack.start()
    run.timings["up"] = time.monotonic()
    run.secrets["apiUrl secret path of the unreachable server"] = await _unreachable_server(stack)
    generator = asyncio.create_task(stack.generate(every=1.0, spike_at=15))
    try:
        await stack.import_spiky_history()
        await restart_each(stack)
        run.timings["after_kills"] = time.monotonic()
        await restart_redis(stack, redis_server)
        run.timings["after_redis"] = time.monotonic()
        await cut_postgres(dbs.proxy)
        run.timings["after_postgres"] = time.monotonic()
        await _inject_malformed(stack.redis, keys)
        await poll(
            "an alert of every kind and the reef tank's resolve",
            lambda: _every_kind_fired(stack),
            240,
            1,
        )
        await poll("the Gmail job completed", lambda: _gmail_done(stack), 120, 1)
    finally:
        # never cancel a step half-way: what it wrote would be missing from the oracle
        stack.stop_generating()
        await asyncio.gather(generator, return_exceptions=True)
    run.timings["generated"] = time.monotonic()
    await _trace_probe(stack, run)
    await wait_settled(stack.redis, keys, "every stream consumed and every node flushed")
    run.traffic_rows, run.usage_rows = await wait_oracle(
        stack, dbs.mysql_url, dbs.postgres_url, dbs.schemas["aggregation"]
    )
    run.timings["settled"] = time.monotonic()

    for name in catalog_streams():
        run.streams[name] = await stream_entries(stack.redis, keys, name)
        run.dlq[name] = int(await stack.redis.xlen(keys.dlq(name)))
    run.alert_events = (await stack.http.get(
        f"{stack.url('alert')}/events", params={"limit": 1000})).json()  # fmt: skip
    run.gmail = await stack.gmail_job()
    run.gmail["cached_rows"] = pg_rows(
        dbs.postgres_url, dbs.schemas["gmail_fetch"], "SELECT count(*) FROM message_cache"
    )[0][0]
    schema = dbs.schemas["snapshot"]
    run.snapshot = {
        "servers": pg_rows(dbs.postgres_url, schema,
                           "SELECT count(DISTINCT a.server_id) FROM snapshots s "
                           "JOIN access_keys a ON a.id = s.key_ref")[0][0],
        "duplicates": pg_rows(dbs.postgres_url, schema,
                              "SELECT count(*) FROM (SELECT key_ref, collected_at FROM snapshots "
                              "GROUP BY 1, 2 HAVING count(*) > 1) d")[0][0],
        "anomalies": pg_rows(dbs.postgres_url, schema,
                             "SELECT a.name FROM anomaly_episodes e "
                             "JOIN access_keys a ON a.id = e.key_ref"),
    }  # fmt: skip
    run.outputs = await _outputs(stack, keys)
    run.redis_users = {c["user"] for c in await stack.redis.client_list()}
    run.db_users = set(await asyncio.to_thread(_database_users, dbs))
    run.alive_at_end = stack.system.alive()


@pytest.fixture(scope="module")
def e2e_run(
    e2e_redis: RedisServer,
    e2e_databases: Databases,
    postgres_url: str,
    mysql_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    accounts = Accounts(
        redis_url=e2e_redis.url, postgres_url=postgres_url, mysql_url=mysql_url,
        homes={**e2e_databases.schemas,
               "traffic_sync": str(sa.make_url(e2e_databases.mysql_url).database)},
        prefix=PREFIX, run=uuid.uuid4().hex[:8],
    )  # fmt: skip
    accounts.create()
    with OtlpReceiver() as otlp:
        config = SystemConfig(
            redis_url=e2e_redis.url,
            postgres_url=e2e_databases.postgres_url,
            mysql_url=e2e_databases.mysql_url,
            stream_prefix=PREFIX,
            log_dir=log_dir,
            schemas=e2e_databases.schemas,
            otlp_endpoint=otlp.url,
            env={"OTEL_BSP_SCHEDULE_DELAY": "200", "HTTP_DOCS": "protected"},
            service_env={
                name: accounts.env(name, e2e_databases.postgres_url, e2e_databases.mysql_url)
                for name in SERVICES
            },
        )
        stack = Stack(config, Scenario(seed=20261123, prefix=PREFIX), gmail_messages=300)
        run = Run(stack, otlp)

        async def go() -> None:
            try:
                await drive(stack, run, e2e_redis, e2e_databases)
            finally:
                run.exit_codes = await stack.stop()
                if "system" in vars(stack):
                    run.logs = {n: stack.system.tail(n, 4000) for n in SERVICES}
                    for name in SERVICES:
                        path = stack.system.log_path(name)
                        run.outputs[f"{name} log"] = path.read_text(errors="replace")

        try:
            try:
                asyncio.run(go())
            except BaseException as exc:
                logs = "\n".join(f"--- {n}\n{t}" for n, t in run.logs.items())
                raise AssertionError(f"e2e run failed: {exc!r}\n{logs}") from exc
            run.secrets |= stack.secret_values()
            run.accounts = accounts
            for name in SERVICES:
                run.secrets[f"{name}'s Redis and database password"] = accounts.passwords[name]
            yield run
        finally:
            accounts.drop()


# -- what must hold -----------------------------------------------------------------------


def test_traffic_flushed_exactly_once(e2e_run: Run) -> None:
    oracle = e2e_run.stack.scenario.oracle.traffic
    assert e2e_run.traffic_rows == {n: (up, down) for n, (up, down) in oracle.items()}
    # the events carry the same deltas, once per event id (redeliveries share an id)
    deltas: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    seen = set()
    for fields in e2e_run.streams[catalog.TRAFFIC_FLUSHED]:
        if fields["id"] in seen:
            continue
        seen.add(fields["id"])
        data = payload(fields)
        deltas[data["node_id"]][0] += data["upload_delta"]
        deltas[data["node_id"]][1] += data["download_delta"]
    assert {n: tuple(v) for n, v in deltas.items()} == e2e_run.traffic_rows


def test_usage_aggregated_equals_what_merchants_tracked(e2e_run: Run) -> None:
    oracle = dict(e2e_run.stack.scenario.oracle.usage)
    assert e2e_run.usage_rows == oracle
    today = date.today().isoformat()
    assert (
        oracle.get((BUSY_MERCHANT, today, "requests"), 0) > 5000
        or len({d for _, d, _ in oracle}) > 1
    )  # the busy merchant passed its threshold (unless the run crossed midnight)


def test_every_stream_carried_events(e2e_run: Run) -> None:
    empty = [name for name, entries in e2e_run.streams.items() if not entries]
    assert not empty, f"streams without events: {empty}"


def test_alerts_opened_resolved_and_notified(e2e_run: Run) -> None:
    names = {e["labels"]["alertname"] for e in e2e_run.alert_events}
    assert {r["name"] for r in rules()} <= names
    tank = [e for e in e2e_run.alert_events if e["subject"] == WARM_TANK]
    assert any(e["resolved_at"] for e in tank), "the reef tank's alert never resolved"
    # one open event at most per rule and subject, and episodes do not overlap
    open_per_pair = Counter(
        (e["rule_id"], e["subject"]) for e in e2e_run.alert_events if not e["resolved_at"]
    )
    assert max(open_per_pair.values(), default=0) <= 1
    notified = e2e_run.stack.webhook.alerts()
    firing = {(a["labels"]["alertname"], a["labels"]["subject"]) for a in notified
              if a["status"] == "firing"}  # fmt: skip
    for e in e2e_run.alert_events:
        assert (e["labels"]["alertname"], e["subject"]) in firing, f"not notified: {e}"
    assert any(a["status"] == "resolved" for a in notified)
    # every alert event is on the alerts stream
    on_stream = {payload(f).get("event_id") for f in e2e_run.streams[catalog.ALERTS]}
    assert {e["id"] for e in e2e_run.alert_events} <= on_stream


def test_gmail_job_completed_with_ordered_progress(e2e_run: Run) -> None:
    job = e2e_run.gmail
    assert job["status"] == "completed"
    assert job["total"] == 300
    assert job["cached_rows"] == 300
    progress = [
        payload(f) for f in e2e_run.streams[catalog.GMAIL_JOB_EVENTS]
        if f["type"] == "gmail.job.progressed"
    ]  # fmt: skip
    mine = [p["progress"] for p in progress if p["job_id"] == job["id"]]
    assert mine
    assert mine[-1] == job["total"]  # progress counts messages
    assert mine == sorted(mine), "progress events out of order"


def test_snapshot_collected_every_server_and_flagged_the_spike(e2e_run: Run) -> None:
    assert e2e_run.snapshot["servers"] == len(e2e_run.stack.world.servers)
    assert e2e_run.snapshot["duplicates"] == 0
    assert ("spiky",) in [tuple(r) for r in e2e_run.snapshot["anomalies"]]
    forecasts = [payload(f) for f in e2e_run.streams[catalog.USAGE_FORECASTS]]
    assert any(f.get("key_name") == "almost-full" for f in forecasts)


def test_one_trace_crosses_traffic_sync_alert_and_the_webhook(e2e_run: Run) -> None:
    probe = e2e_run.probe
    assert probe is not None
    traceparent = {k.lower(): v for k, v in probe.headers.items()}.get("traceparent")
    assert traceparent, "the webhook request carried no trace context"
    trace_id = traceparent.split("-")[1]

    def services() -> set[str]:
        return {s.service for s in e2e_run.otlp.spans if s.trace_id == trace_id}

    # the exporters flushed at shutdown: the data is here, or about to be
    wait_until(lambda: {"traffic_sync", "alert"} <= services(), what=lambda: f"{services()}")
    names = {s.name for s in e2e_run.otlp.spans if s.trace_id == trace_id}
    assert any(n.startswith("process traffic.flushed") for n in names), names


def test_no_service_crashed_and_all_stopped_cleanly(e2e_run: Run) -> None:
    assert all(e2e_run.alive_at_end.values()), e2e_run.alive_at_end
    assert e2e_run.exit_codes == dict.fromkeys(SERVICES, 0), e2e_run.exit_codes
    assert e2e_run.stack.system.restarts == dict.fromkeys(SERVICES, 1)


def test_dead_letters_are_only_the_injected_entries(e2e_run: Run) -> None:
    expected = {name: (1 if name in MALFORMED else 0) for name in catalog_streams()}
    assert e2e_run.dlq == expected, json.dumps(e2e_run.dlq)


def test_every_service_ran_as_its_least_privilege_user(e2e_run: Run) -> None:
    """Nothing was refused: a missing right would have failed the run, or shows here."""
    accounts = e2e_run.accounts
    assert accounts is not None
    users = {accounts.user(name) for name in SERVICES}
    assert users <= e2e_run.redis_users, e2e_run.redis_users
    assert users <= e2e_run.db_users, e2e_run.db_users
    refused = [
        f"{name}: {line}"
        for name in SERVICES
        for line in e2e_run.outputs[f"{name} log"].splitlines()
        if "NOPERM" in line or "permission denied" in line or "command denied" in line
    ]
    assert not refused, "\n".join(refused[:20])


def test_no_secret_in_logs_metrics_api_responses_or_dead_letters(e2e_run: Run) -> None:
    assert len(e2e_run.secrets) >= 15
    assert all(len(value) >= 16 for value in e2e_run.secrets.values()), e2e_run.secrets.keys()
    assert any(" log" in where for where in e2e_run.outputs)
    hits = [
        f"{what} in {where}"
        for where, text in e2e_run.outputs.items()
        for what, value in e2e_run.secrets.items()
        if value in text
    ]
    assert not hits, "\n".join(hits)
