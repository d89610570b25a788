"""The five services as local processes: one way to start, kill, restart and stop them,
shared by ``make demo`` and the end-to-end tests (no Docker needed).

Each service runs ``python -m <pkg> run`` — the command of its container — with its
own HTTP port, a stable consumer name (so a restarted replica re-runs its own
pending entries) and its output appended to ``<log_dir>/<service>.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx

from simulators.ports import free_port

#: service name -> Python package, in start order (alert first: it consumes everyone)
SERVICES: dict[str, str] = {
    "alert": "alert",
    "traffic_sync": "traffic_sync",
    "aggregation": "aggregation",
    "snapshot": "snapshot",
    "gmail_fetch": "gmail_fetch",
}
#: the variables of a developer's shell that must not leak into a service under our control
_DROPPED = ("OTEL_", "EGRESS_", *(f"{name.upper()}_" for name in SERVICES))
#: where the local stack's fakes listen (webhook sink, Outline servers): loopback, which
#: user-given URLs may reach only when allow-listed (docs/security.md, "Outbound requests")
LOCAL_EGRESS_NETWORKS = "127.0.0.0/8"


@dataclass
class SystemConfig:
    redis_url: str
    postgres_url: str
    mysql_url: str
    stream_prefix: str = ""
    log_dir: Path = Path(".demo/logs")
    #: service -> HTTP port (0: let the OS choose is not possible across processes, so
    #: callers pick free ports)
    ports: dict[str, int] = field(default_factory=dict)
    #: DB_SCHEMA per service (default: the service's own schema)
    schemas: dict[str, str] = field(default_factory=dict)
    otlp_endpoint: str | None = None
    log_level: str = "INFO"
    #: EGRESS_ALLOW_NETWORKS of every service
    egress_allow_networks: str = LOCAL_EGRESS_NETWORKS
    #: extra environment for every service, then per service
    env: dict[str, str] = field(default_factory=dict)
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    #: what runs a service instead of ``-m <pkg>`` (the arguments after the interpreter,
    #: before ``run``): a test's own entry, e.g. the soak's snapshot with a fast clock
    entries: dict[str, list[str]] = field(default_factory=dict)


class ServiceFailed(RuntimeError):
    pass


class LocalSystem:
    """Start/stop the services; ``with LocalSystem(cfg) as system: system.start_all()``."""

    def __init__(self, config: SystemConfig, services: Iterable[str] = SERVICES) -> None:
        self.config = config
        self.services = list(services)
        for name in self.services:
            config.ports.setdefault(name, free_port())
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        self.restarts: dict[str, int] = dict.fromkeys(self.services, 0)
        config.log_dir.mkdir(parents=True, exist_ok=True)

    # -- environment ----------------------------------------------------------------------

    def env(self, name: str) -> dict[str, str]:
        cfg = self.config
        env = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED)}
        for var in ("REDIS_URL", "DATABASE_URL", "STREAM_PREFIX", "HTTP_PORT", "DB_SCHEMA"):
            env.pop(var, None)
        env.update(
            REDIS_URL=cfg.redis_url,
            DATABASE_URL=cfg.mysql_url if name == "traffic_sync" else cfg.postgres_url,
            STREAM_PREFIX=cfg.stream_prefix,
            HTTP_PORT=str(cfg.ports[name]),
            LOG_LEVEL=cfg.log_level,
            CONSUMER_NAME=f"{name}-local-1",
            SHUTDOWN_TIMEOUT_SECONDS="10",
            PYTHONUNBUFFERED="1",
            EGRESS_ALLOW_NETWORKS=cfg.egress_allow_networks,
        )
        if name in cfg.schemas:
            env["DB_SCHEMA"] = cfg.schemas[name]
        if cfg.otlp_endpoint:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = cfg.otlp_endpoint
        env.update(cfg.env)
        env.update(cfg.service_env.get(name, {}))
        return env

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.config.ports[name]}"

    # -- one-shot commands ----------------------------------------------------------------

    def cli(
        self, name: str, *args: str, stdin: str | None = None, extra_env: Mapping[str, str] = {}
    ) -> str:
        """``python -m <pkg> <args>`` with the service's environment; its stdout, or
        :class:`ServiceFailed` with its stderr."""
        done = subprocess.run(  # noqa: S603 - our interpreter, our module
            [sys.executable, "-m", SERVICES[name], *args],
            env={**self.env(name), **extra_env},
            input=stdin.encode() if stdin is not None else None,
            capture_output=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise ServiceFailed(
                f"{name} {' '.join(args)} exited {done.returncode}: "
                f"{done.stderr.decode(errors='replace')[-2000:]}"
            )
        return done.stdout.decode()

    def migrate(self) -> None:
        for name in self.services:
            self.cli(name, "migrate")

    # -- processes ------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.config.log_dir / f"{name}.log"

    def start(self, name: str) -> None:
        if name in self.procs and self.procs[name].poll() is None:
            raise ServiceFailed(f"{name} is already running")
        log = self._logs.get(name)
        if log is None:
            log = self._logs[name] = self.log_path(name).open("ab")
        entry = self.config.entries.get(name, ["-m", SERVICES[name]])
        self.procs[name] = subprocess.Popen(  # noqa: S603 - our interpreter, our module
            [sys.executable, *entry, "run"],
            env=self.env(name),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def start_all(self) -> None:
        for name in self.services:
            self.start(name)

    def ready(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.url(name)}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, names: Iterable[str] | None = None, seconds: float = 180.0) -> None:
        deadline = time.monotonic() + seconds
        for name in names or self.services:
            while not self.ready(name):
                self.check_alive(name)
                if time.monotonic() > deadline:
                    raise ServiceFailed(f"{name} not ready within {seconds}s: {self.tail(name)}")
                time.sleep(0.1)

    def check_alive(self, *names: str) -> None:
        for name in names or tuple(self.procs):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServiceFailed(f"{name} is not running (exit {code}): {self.tail(name)}")

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown code runs, as when a node dies."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)

    def stop(self, name: str, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def restart(self, name: str, *, hard: bool = True) -> None:
        if hard:
            self.kill(name)
        else:
            self.stop(name)
        self.restarts[name] += 1
        self.start(name)

    def stop_all(self, timeout: float = 20.0) -> dict[str, int]:
        """SIGTERM to every running service at once (once: a second SIGTERM would cut a
        graceful shutdown short), wait, SIGKILL stragglers; the exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        codes = {}
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            codes[name] = proc.returncode
        for log in self._logs.values():
            log.close()
        self._logs.clear()
        return codes

    def tail(self, name: str, chars: int = 3000) -> str:
        try:
            return self.log_path(name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> LocalSystem:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
