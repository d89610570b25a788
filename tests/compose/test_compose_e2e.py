"""The system in containers, for real: ``make compose-e2e``.

Builds the images, brings the compose file up with the demo profile (and an OTLP
receiver, tests/compose/compose.e2e.yml) as a project of its own, waits until every
container is healthy and every one-shot has exited 0, then checks through the
containers what ``make e2e`` checks locally:

- events went through every stream of the catalog;
- the demo's alerts reached the webhook sink, and one delivery's trace (its
  ``traceparent``) is in the OTLP receiver with spans from the service that read the
  readings;
- a service container killed with ``docker kill`` and started again loses nothing:
  after the generator is stopped, the traffic (MariaDB) and usage (PostgreSQL) tables
  equal what the generator wrote (its oracle file);
- ``docker compose stop`` stops every service within its grace period, exit code 0;

then removes the project with its volumes. Image sizes, build and start-up times and
each container's idle memory are printed and written to
``.compose-e2e/figures.json`` (docs/deploy.md quotes them).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.ports import free_port
from simulators.scenario import rules
from tributary import catalog
from tributary_testing.compose import Compose, docker_answers, settled

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("snapshot", "gmail-fetch", "traffic-sync", "alert", "aggregation")
ONE_SHOTS = ("demo-register",)
#: the service killed mid-run; it holds traffic counters moved but not yet written
KILLED = "traffic-sync"
GRACE_SECONDS = 10.0


@dataclass
class Run:
    compose: Compose
    ports: dict[str, int]
    figures: dict[str, Any] = field(default_factory=dict)
    streams: dict[str, int] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    spans: list[dict[str, Any]] = field(default_factory=list)
    oracle: dict[str, Any] = field(default_factory=dict)
    traffic: dict[str, list[int]] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=dict)
    stop_seconds: float = 0.0
    exit_codes: dict[str, int] = field(default_factory=dict)
    killed_exit: int | None = None


def _sql_rows(compose: Compose, service: str, *argv: str) -> list[list[str]]:
    out = compose.exec(service, *argv)
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def traffic_rows(compose: Compose) -> dict[str, list[int]]:
    rows = _sql_rows(compose, "mariadb", "mariadb", "-utributary", "-ptributary", "traffic",
                     "-N", "-B", "-e",
                     "SELECT node_id, upload_bytes, download_bytes FROM node_traffic")  # fmt: skip
    return {r[0]: [int(r[1]), int(r[2])] for r in rows}


def usage_rows(compose: Compose) -> dict[str, int]:
    query = ("SELECT merchant_id, usage_date, metric, metric_value "
             "FROM aggregation.merchant_usage")  # fmt: skip
    rows = _sql_rows(compose, "postgres", "psql", "-U", "tributary", "-d", "tributary",
                     "-At", "-F", "\t", "-c", query)  # fmt: skip
    return {f"{r[0]}|{r[1]}|{r[2]}": int(r[3]) for r in rows}


def stream_lengths(compose: Compose) -> dict[str, int]:
    lengths = {}
    for name in catalog.STREAMS:
        lengths[name] = int(compose.exec("redis", "redis-cli", "XLEN", name).strip() or 0)
    return lengths


def _get(port: int, path: str) -> Any:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    response.raise_for_status()
    return response.json()


def firing_alerts(deliveries: list[dict[str, Any]]) -> set[str]:
    return {
        alert["labels"]["alertname"]
        for delivery in deliveries
        if isinstance(delivery["body"], dict)
        for alert in delivery["body"].get("alerts", [])
        if alert.get("status") == "firing"
    }


def image_figures() -> dict[str, float]:
    """Each image's size in MB (the compose file's default names)."""
    sizes = {}
    for name in (*(s.replace("-", "_") for s in SERVICES), "simulators"):
        done = subprocess.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", f"tributary/{name}:dev"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        sizes[name] = round(int(done.stdout.strip()) / 1e6, 1)
    return sizes


def memory_figures(compose: Compose) -> dict[str, str]:
    found: dict[str, str] = {}
    for container in compose.ps():
        if container.service not in SERVICES or container.state != "running":
            continue
        done = compose.run(
            "exec", "-T", container.service, "python", "-c",
            "import re;print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/1/status').read())[1])",
            check=False,
        )  # fmt: skip
        found[container.service] = f"{int(done.stdout.strip() or 0) / 1024:.0f} MB"
    return found


def _drive(run: Run) -> None:
    compose = run.compose
    started = time.monotonic()
    compose.run("build", timeout=1800)
    run.figures["build_seconds"] = round(time.monotonic() - started, 1)
    run.figures["image_mb"] = image_figures()

    started = time.monotonic()
    compose.run("up", "-d", timeout=900)
    compose.wait("every container healthy, every one-shot done",
                 lambda: settled(compose.ps(), ONE_SHOTS), 420)  # fmt: skip
    run.figures["up_to_healthy_seconds"] = round(time.monotonic() - started, 1)

    webhook, traces = run.ports["webhook"], run.ports["traces"]
    compose.wait("a firing alert at the webhook sink",
                 lambda: bool(firing_alerts(_get(webhook, "/deliveries"))), 300)  # fmt: skip

    # a service killed with what it moved out of Redis not yet written; started again
    compose.run("kill", "-s", "SIGKILL", KILLED)
    killed = [c for c in compose.ps() if c.service == KILLED]
    run.killed_exit = killed[0].exit_code if killed else None
    compose.run("start", KILLED)
    compose.wait("the killed service healthy again",
                 lambda: settled(compose.ps(), ONE_SHOTS), 180)  # fmt: skip
    run.figures["idle_rss"] = memory_figures(compose)

    compose.wait("every stream carried events",
                 lambda: all(stream_lengths(compose).values()), 300)  # fmt: skip
    compose.run("stop", "-t", "30", "demo-generate")
    run.oracle = json.loads(compose.exec("outline-sim", "cat", "/demo/oracle.json"))

    def tables_match() -> bool:
        run.traffic, run.usage = traffic_rows(compose), usage_rows(compose)
        return bool(run.traffic == run.oracle["traffic"] and run.usage == run.oracle["usage"])

    compose.wait("tables equal to what the generator wrote", tables_match, 240, every=3)
    run.streams = stream_lengths(compose)
    run.deliveries = _get(webhook, "/deliveries")
    compose.wait("the delivery's trace exported", lambda: _traced(run, _get(traces, "/spans")), 60)

    started = time.monotonic()
    compose.run("stop", "-t", str(int(GRACE_SECONDS)), *SERVICES, timeout=120)
    run.stop_seconds = time.monotonic() - started
    run.exit_codes = {c.service: c.exit_code for c in compose.ps() if c.service in SERVICES}


def _traced(run: Run, spans: list[dict[str, Any]]) -> bool:
    run.spans = spans
    return trace_of_a_delivery(run) is not None


def trace_of_a_delivery(run: Run) -> tuple[str, set[str]] | None:
    """The trace id of an alert delivery whose trace has spans of the alert service."""
    by_trace: dict[str, set[str]] = {}
    for span in run.spans:
        by_trace.setdefault(span["trace_id"], set()).add(span["service"])
    for delivery in run.deliveries:
        headers = {k.lower(): v for k, v in delivery["headers"].items()}
        parts = headers.get("traceparent", "").split("-")
        if len(parts) == 4 and "alert" in by_trace.get(parts[1], set()):
            return parts[1], by_trace[parts[1]]
    return None


@pytest.fixture(scope="module")
def compose_run() -> Run:
    if not docker_answers():
        pytest.fail(
            "no Docker engine answers `docker info`: start one (here: ../shared/containers/up, "
            "then `. /run/ctr-standins/env`), or run `make compose-e2e`, which does"
        )
    ports = {name: free_port() for name in ("webhook", "traces", "jaeger", *SERVICES)}
    env = {
        "WEBHOOK_SINK_HOST_PORT": str(ports["webhook"]),
        "TRACE_SINK_HOST_PORT": str(ports["traces"]),
        "JAEGER_UI_PORT": str(ports["jaeger"]),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://trace-sink:4318",
        # the demo's cycles, shortened so that a run settles in a minute
        "TRAFFIC_SYNC_INTERVAL_SECONDS": "5",
        "AGGREGATION_INTERVAL_SECONDS": "10",
        "SNAPSHOT_COLLECT_INTERVAL_SECONDS": "10",
        "SNAPSHOT_ANALYSIS_INTERVAL_SECONDS": "10",
    }
    for name in SERVICES:
        env[f"{name.upper().replace('-', '_')}_HOST_PORT"] = str(ports[name])
    compose = Compose(
        root=ROOT,
        project=f"tribe2e{uuid.uuid4().hex[:6]}",
        files=("docker-compose.yml", "tests/compose/compose.e2e.yml"),
        env_file="deploy/compose/demo.env",
        profiles=("demo",),
        env=env,
    )
    run = Run(compose, ports)
    try:
        _drive(run)
    except BaseException as exc:
        raise AssertionError(f"compose run failed: {exc}\n{compose.logs(tail=60)}") from exc
    finally:
        started = time.monotonic()
        compose.run("down", "-v", "--remove-orphans", "-t", "10", check=False, timeout=300)
        run.figures["down_seconds"] = round(time.monotonic() - started, 1)
        out = ROOT / ".compose-e2e"
        out.mkdir(exist_ok=True)
        (out / "figures.json").write_text(json.dumps(run.figures, indent=2))
        print(json.dumps(run.figures, indent=2))
    return run


def test_every_stream_carried_events(compose_run: Run) -> None:
    empty = [name for name, length in compose_run.streams.items() if not length]
    assert not empty, f"streams without events: {empty}"


def test_alerts_reached_the_webhook_sink(compose_run: Run) -> None:
    fired = firing_alerts(compose_run.deliveries)
    assert fired <= {r["name"] for r in rules()}
    assert "tank too warm" in fired, fired


def test_one_trace_goes_from_the_readings_to_the_webhook(compose_run: Run) -> None:
    found = trace_of_a_delivery(compose_run)
    assert found is not None, "no delivery's trace reached the OTLP receiver"
    trace_id, _ = found
    names = {s["name"] for s in compose_run.spans if s["trace_id"] == trace_id}
    assert any("device.readings" in n for n in names), names


def test_a_killed_container_lost_nothing(compose_run: Run) -> None:
    assert compose_run.killed_exit == 137  # SIGKILL
    assert compose_run.oracle["steps"] > 10
    assert compose_run.traffic == compose_run.oracle["traffic"]
    assert compose_run.usage == compose_run.oracle["usage"]
    assert compose_run.traffic
    assert compose_run.usage


def test_every_service_stopped_within_its_grace_period_with_exit_0(compose_run: Run) -> None:
    assert compose_run.exit_codes == dict.fromkeys(SERVICES, 0)
    assert compose_run.stop_seconds < GRACE_SECONDS + 5
