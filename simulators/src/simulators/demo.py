"""``make demo`` / ``python -m simulators.demo``: the five services and the simulators as
local processes against local Redis, PostgreSQL and MariaDB, with a live view.

Every run starts fresh: it (re)creates the databases ``tributary_demo`` (PostgreSQL and
MariaDB, or the ones in DEMO_DATABASE_URL / DEMO_MYSQL_URL) and deletes the Redis keys
under the ``demo:`` prefix, runs the migrations, starts everything, registers the demo
data and drives the scenario of :mod:`simulators.scenario`. Ctrl-C stops it all.

When a configured server does not answer, the demo starts its own from the dev group's
wheels (:mod:`simulators.embedded`, data under ``--embedded-dir``) and says so in one
line; with no MySQL, traffic_sync runs on PostgreSQL (in its own schema).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path

import redis
import sqlalchemy as sa
from rich.console import Console
from rich.live import Live
from sqlalchemy.engine import make_url

from simulators.dashboard import refresh_forever, render, stream_rows
from simulators.embedded import (
    EmbeddedError,
    EmbeddedServers,
    server_listens,
)
from simulators.outline_quirks import Quirks
from simulators.scenario import Scenario
from simulators.stack import Stack
from simulators.system import ServiceFailed, SystemConfig
from tributary.keys import Keys
from tributary.tasks import cancel_and_wait

PREFIX = "demo:"
DEFAULTS = {
    "DEMO_REDIS_URL": "redis://127.0.0.1:6379/0",
    "DEMO_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/tributary_demo",
    "DEMO_MYSQL_URL": "mysql+pymysql://root@127.0.0.1:3306/tributary_demo",
}


def setting(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def local_servers(embedded: EmbeddedServers) -> dict[str, str]:
    """DEMO_* name -> URL: the configured server where one answers, else an embedded
    one (started into ``embedded``); traffic_sync shares PostgreSQL when no MySQL does."""
    urls = {name: setting(name) for name in DEFAULTS}
    if not server_listens(urls["DEMO_REDIS_URL"]):
        urls["DEMO_REDIS_URL"] = embedded.start_redis()
    if not server_listens(urls["DEMO_DATABASE_URL"]):
        name = make_url(urls["DEMO_DATABASE_URL"]).database or "tributary_demo"
        urls["DEMO_DATABASE_URL"] = embedded.start_postgres(name)
    if not server_listens(urls["DEMO_MYSQL_URL"]):
        urls["DEMO_MYSQL_URL"] = urls["DEMO_DATABASE_URL"]
        embedded.notes.append("traffic_sync on PostgreSQL (no MySQL listens)")
    return urls


def recreate_database(url: str) -> None:
    """Drop and create the database of ``url`` (connecting to the server's default one)."""
    target = make_url(url)
    name = target.database
    if not name:
        raise SystemExit(f"{target.render_as_string(hide_password=True)}: no database name")
    postgres = target.get_backend_name() == "postgresql"
    admin_db = "postgres" if postgres else "mysql"
    engine = sa.create_engine(target.set(database=admin_db), isolation_level="AUTOCOMMIT")
    quote = engine.dialect.identifier_preparer.quote
    try:
        with engine.connect() as conn:
            force = " WITH (FORCE)" if postgres else ""
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quote(name)}{force}"))
            conn.execute(sa.text(f"CREATE DATABASE {quote(name)}"))
    except sa.exc.OperationalError as exc:
        raise SystemExit(
            f"cannot reach {target.render_as_string(hide_password=True)}: {exc.orig}"
        ) from None
    finally:
        engine.dispose()


def clear_redis(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for batch in _chunks(client.scan_iter(match=f"{prefix}*", count=1000), 500):
            client.unlink(*batch)
    except redis.ConnectionError as exc:
        raise SystemExit(f"cannot reach Redis at {url}: {exc}") from None
    finally:
        client.close()


def _chunks(items: object, size: int) -> list[list[bytes]]:
    out: list[list[bytes]] = [[]]
    for item in items:  # type: ignore[attr-defined]
        if len(out[-1]) >= size:
            out.append([])
        out[-1].append(item)
    return [c for c in out if c]


async def _plain_progress(stack: Stack, keys: Keys, every: float) -> None:
    """Without a terminal: one line of figures every ``every`` seconds."""
    while True:
        rows = await stream_rows(stack.redis, keys)
        alerts = len(stack.webhook.alerts())
        lengths = " ".join(f"{r.name}={r.length}" for r in rows if r.length)
        print(f"[demo] step {stack.scenario.step_no} alerts-notified {alerts} {lengths}",
              flush=True)  # fmt: skip
        await asyncio.sleep(every)


async def run(args: argparse.Namespace) -> int:
    embedded = EmbeddedServers(Path(args.embedded_dir))
    try:
        return await run_on(args, embedded)
    finally:
        await asyncio.to_thread(embedded.stop)


async def run_on(args: argparse.Namespace, embedded: EmbeddedServers) -> int:
    console = Console()
    urls = await asyncio.to_thread(local_servers, embedded)
    if embedded.summary():
        console.print(embedded.summary(), soft_wrap=True, highlight=False)
    log_dir = Path(args.log_dir)
    config = SystemConfig(
        redis_url=urls["DEMO_REDIS_URL"],
        postgres_url=urls["DEMO_DATABASE_URL"],
        mysql_url=urls["DEMO_MYSQL_URL"],
        stream_prefix=PREFIX,
        log_dir=log_dir,
        ports={name: args.port_base + i for i, name in enumerate(
            ("alert", "traffic_sync", "aggregation", "snapshot", "gmail_fetch"))},
        otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
    )  # fmt: skip
    console.print("[bold]Tributary demo[/]: preparing databases and Redis ...")
    recreate_database(config.postgres_url)
    if config.mysql_url != config.postgres_url:
        recreate_database(config.mysql_url)
    clear_redis(config.redis_url, PREFIX)
    stack = Stack(
        config, Scenario(seed=args.seed, prefix=PREFIX), outline_quirks=args.outline_quirks
    )
    console.print("starting simulators, migrating and starting the five services ...")
    keys = Keys(PREFIX)
    tasks: list[asyncio.Task[None]] = []
    try:
        await stack.start()
        console.print(
            "up: "
            + ", ".join(f"{n} {stack.url(n)}" for n in stack.system.services)
            + f"\nfollow a stream: STREAM_PREFIX={PREFIX} make tail STREAM=alerts"
            + "\nthe APIs want the demo's token (API_TOKENS entry 'demo', every scope):"
            + f"\n  export TOKEN={stack.api_token}"
            + f'\n  curl -H "Authorization: Bearer $TOKEN" {stack.url("alert")}/rules'
            + '\n  curl -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" '
            + '-d \'{"device_id": "d1", "metric": "temp", "value": 21}\' '
            + f"{stack.url('alert')}/readings"
        )
        tasks.append(asyncio.create_task(stack.generate(every=args.every, spike_at=args.spike_at)))
        tasks.append(asyncio.create_task(stack.import_spiky_history()))
        deadline = time.monotonic() + args.duration if args.duration else None
        if args.no_view or not console.is_terminal:
            tasks.append(asyncio.create_task(_plain_progress(stack, keys, 10)))
            while deadline is None or time.monotonic() < deadline:
                await asyncio.sleep(1)
                stack.system.check_alive()
        else:
            with Live(await render(stack, keys), console=console, screen=False,
                      refresh_per_second=2) as live:  # fmt: skip
                tasks.append(asyncio.create_task(refresh_forever(stack, keys, live.update)))
                if args.duration:
                    await asyncio.sleep(args.duration)
                else:
                    await asyncio.Event().wait()  # until Ctrl-C
    except asyncio.CancelledError:
        pass
    finally:
        await cancel_and_wait(tasks)
        console.print("stopping ...")
        codes = await stack.stop()
        console.print("exit codes: " + ", ".join(f"{n} {c}" for n, c in codes.items()))
    return 0 if all(code == 0 for code in codes.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators.demo", description=__doc__)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--every", type=float, default=2.0, help="seconds between generator steps")
    parser.add_argument("--spike-at", type=int, default=30, help="step of the anomaly spike")
    parser.add_argument("--duration", type=float, default=0, help="stop after N seconds (0: never)")
    parser.add_argument("--no-view", action="store_true", help="print progress lines instead")
    parser.add_argument("--port-base", type=int, default=8001)
    parser.add_argument("--outline-quirks", type=Quirks.parse, default=Quirks(),
                        help="real Outline quirks the fake servers show: all, or "
                             "names (query_cache,scrape_seconds=60,...)")  # fmt: skip
    parser.add_argument("--log-dir", default=".demo/logs")
    parser.add_argument("--embedded-dir", default=".demo/embedded",
                        help="data of the servers the demo starts when none answers")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    async def main_task() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(args)

    try:
        return asyncio.run(main_task())
    except KeyboardInterrupt:
        return 0
    except (ServiceFailed, TimeoutError, EmbeddedError) as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
