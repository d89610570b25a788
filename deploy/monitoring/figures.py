"""The figures of docs/operations.md: the Grafana dashboard's own queries, plotted with
matplotlib over a demo run scraped by a real Prometheus that evaluates the alert rules.

    uv run python deploy/monitoring/figures.py [--minutes 10] [--out docs/figures]

Runs the demo's stack (:class:`simulators.stack.Stack`: simulators, the five services,
the generators) under a Redis prefix, PostgreSQL schemas and a MariaDB database of its
own, and a Prometheus server (Debian's `prometheus` package; only this process, on a
free loopback port, stopped at the end) scraping each service every 5 s as the job
named after it, with the chart's rule file. A third into the run it dead-letters one
malformed reading and SIGKILLs traffic_sync; two thirds in it starts traffic_sync again.
Then every panel of the dashboard's rows named by --rows is queried over the run
(query_range) and drawn, one PNG per row, plus the alerts' states (`ALERTS`).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import matplotlib as mpl
from PIL import Image

mpl.use("Agg")
import matplotlib.pyplot as plt

from simulators.ports import free_port
from simulators.scenario import Scenario
from simulators.stack import Stack, poll
from simulators.system import SERVICES, SystemConfig
from tributary import catalog
from tributary.keys import Keys
from tributary_testing.infra import create_mysql_database, drop_run_data

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "deploy" / "helm" / "tributary" / "files"
DASHBOARD = FILES / "grafana" / "tributary.json"
RULES = FILES / "prometheus" / "tributary-rules.yaml"
#: seconds between scrapes and between two points of a plotted series
STEP_SECONDS = 5
#: what Grafana's $__rate_interval is at that scrape interval (at least four scrapes)
RATE_INTERVAL = "30s"
REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
MYSQL_URL = "mysql+pymysql://root@127.0.0.1:3306/mysql"


def prometheus_config(stack: Stack, token_file: Path) -> str:
    jobs = [
        {
            "job_name": name,
            "authorization": {"credentials_file": str(token_file)},
            "static_configs": [{"targets": [stack.url(name).removeprefix("http://")]}],
        }
        for name in SERVICES
    ]
    config = {
        "global": {"scrape_interval": f"{STEP_SECONDS}s", "evaluation_interval": "5s"},
        "rule_files": [str(RULES)],
        "scrape_configs": jobs,
    }
    return json.dumps(config)  # JSON is YAML


@contextmanager
def prometheus(stack: Stack, workdir: Path) -> Iterator[str]:
    """A Prometheus server of this run; yields its URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise SystemExit(
            "prometheus is missing: apt-get install prometheus (the server only runs here)"
        )
    token_file = workdir / "token"
    token_file.write_text(stack.api_token)
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(stack, token_file))
    port = free_port()
    proc = subprocess.Popen(  # noqa: S603 - Debian's prometheus, our config
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(workdir / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def demo_run(stack: Stack, prom: str, minutes: float) -> tuple[float, float]:
    """The run with its faults; (start, end) in unix time."""
    async with httpx.AsyncClient() as http:

        async def ready() -> bool:
            try:
                return (await http.get(f"{prom}/-/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await poll("prometheus ready", ready, 60)
    start = time.time()
    generating = asyncio.create_task(stack.generate(every=2.0, spike_at=30))
    history = asyncio.create_task(stack.import_spiky_history())
    seconds = minutes * 60
    await asyncio.sleep(seconds / 3)
    poison = {"id": "not-an-event", "data": "{"}
    await stack.redis.xadd(Keys(stack.scenario.prefix).stream(catalog.DEVICE_READINGS), poison)  # type: ignore[arg-type]
    stack.system.kill("traffic_sync")
    print(f"[figures] {time.time() - start:.0f}s: poison reading, traffic_sync killed", flush=True)
    await asyncio.sleep(seconds / 3)
    stack.system.start("traffic_sync")
    print(f"[figures] {time.time() - start:.0f}s: traffic_sync started again", flush=True)
    await asyncio.sleep(seconds / 3)
    stack.stop_generating()
    await generating
    history.cancel()
    return start, time.time()


def query_range(prom: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {
        "query": expr,
        "start": start,
        "end": end,
        "step": STEP_SECONDS,
    }
    r = httpx.get(f"{prom}/api/v1/query_range", params=params, timeout=30)
    r.raise_for_status()
    result: list[dict[str, Any]] = r.json()["data"]["result"]
    return result


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), template) or "value"


def with_gaps(values: list[list[Any]], start: float) -> tuple[list[float], list[float]]:
    """Minutes into the run and values, NaN where the series had no sample (a dead
    process's series are stale), so the line breaks there instead of bridging."""
    xs: list[float] = []
    ys: list[float] = []
    previous: float | None = None
    for stamp, value in values:
        t = float(stamp) - start
        if previous is not None and t - previous > 2 * STEP_SECONDS:
            xs.append((previous + STEP_SECONDS) / 60)
            ys.append(math.nan)
        xs.append(t / 60)
        ys.append(float(value))
        previous = t
    return xs, ys


def draw_panel(ax: Any, panel: dict[str, Any], prom: str, span: tuple[float, float]) -> None:
    start, end = span
    timeline = panel is ALERTS_PANEL
    labels: list[str] = []
    for target in panel["targets"]:
        expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
        for series in query_range(prom, expr, start, end):
            xs, ys = with_gaps(series["values"], start)
            label = legend(target["legendFormat"], series["metric"])
            if timeline:  # one band per alert and state
                ys = [len(labels) if not math.isnan(y) else math.nan for y in ys]
                ax.plot(xs, ys, linewidth=6, solid_capstyle="butt")
                labels.append(label)
            else:
                ax.plot(xs, ys, linewidth=1, label=label)
    ax.set_title(f"{panel['title']} ({panel['fieldConfig']['defaults']['unit']})", fontsize=9)
    ax.set_xlim(0, (end - start) / 60)
    ax.tick_params(labelsize=7)
    ax.set_xlabel("minutes into the run", fontsize=7)
    if timeline:
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(-0.5, max(len(labels), 1) - 0.5)
    elif ax.lines:
        ax.legend(fontsize=6, loc="upper left", ncol=2, frameon=False)


def draw(
    panels: list[dict[str, Any]], title: str, prom: str, span: tuple[float, float], out: Path
) -> None:
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(15, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel, prom, span)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72)
    plt.close(fig)
    # a palette of 64 colours: a quarter of the bytes, nothing visible lost on line plots
    Image.open(buffer).convert("RGB").quantize(colors=64).save(out, optimize=True)
    print(f"[figures] {out} ({out.stat().st_size // 1024} KB)", flush=True)


def rows_of(dashboard: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    rows: dict[str, list[dict[str, Any]]] = {}
    current: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            current = rows.setdefault(panel["title"], [])
        else:
            current.append(panel)
    return rows


ALERTS_PANEL: dict[str, Any] = {
    "title": "Alerts of the rules, while pending or firing",
    "fieldConfig": {"defaults": {"unit": "state"}},
    "targets": [{"expr": "max by (alertname, alertstate) (ALERTS)",
                 "legendFormat": "{{alertname}} {{alertstate}}"}],
}  # fmt: skip


def report(prom: str, span: tuple[float, float], args: argparse.Namespace) -> None:
    """One PNG per dashboard row asked for; the alerts Prometheus has at the end."""
    rows = rows_of(json.loads(DASHBOARD.read_text()))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.rows:
        panels = rows[name] + ([ALERTS_PANEL] if name == "System" else [])
        title = f"Tributary dashboard, row {name!r}: {args.minutes:g} minutes of the demo"
        draw(panels, title, prom, span, out / f"dashboard-{name.lower()}.png")
    alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    for alert in alerts:
        labels = {k: v for k, v in alert["labels"].items() if k != "alertname"}
        print(f"[figures] alert {alert['labels']['alertname']} {alert['state']} {labels}")


async def main_async(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    prefix = f"figures_{run}:"
    schemas = {name: f"figures_{run}_{name}" for name in SERVICES if name != "traffic_sync"}
    mysql_url = create_mysql_database(MYSQL_URL, f"figures_{run}")
    workdir = Path(tempfile.mkdtemp(prefix="tributary-figures-"))
    config = SystemConfig(
        redis_url=REDIS_URL,
        postgres_url=POSTGRES_URL,
        mysql_url=mysql_url,
        stream_prefix=prefix,
        log_dir=workdir / "logs",
        schemas=schemas,
        log_level="WARNING",
        env={"RETENTION_INTERVAL_SECONDS": "10"},
    )
    stack = Stack(config, Scenario(seed=7, prefix=prefix))
    try:
        await stack.start()
        with prometheus(stack, workdir) as prom:
            span = await demo_run(stack, prom, args.minutes)
            await asyncio.to_thread(report, prom, span, args)
    finally:
        await stack.stop()
        drop_run_data(REDIS_URL, prefix, POSTGRES_URL, schemas.values(), mysql_url)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"))
    parser.add_argument("--rows", nargs="+", default=["System", "traffic_sync"])
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
