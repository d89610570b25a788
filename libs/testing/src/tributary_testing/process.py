"""Services as real subprocesses in tests: start, signal, clean up (waits: ``waiting``).

Every service's fault tests (SIGKILL mid-work, SIGTERM mid-run, two replicas)
launch ``python -m <module>`` the same way; this is that one way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable

from tributary_testing.auth import API_TOKENS


def service_env(
    *,
    redis_url: str,
    database_url: str,
    stream_prefix: str,
    drop_prefixes: Iterable[str] = (),
    **extra: str,
) -> dict[str, str]:
    """The environment of a service under test: this process's, minus the service's own
    variables and OTEL_* (so nothing leaks in from the developer's shell), plus the test's."""
    dropped = ("OTEL_", *drop_prefixes)
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        STREAM_PREFIX=stream_prefix,
        HTTP_PORT="0",
        SHUTDOWN_TIMEOUT_SECONDS="10",
        LOG_LEVEL="WARNING",
        API_TOKENS=API_TOKENS,  # requests send tributary_testing.auth.AUTH
    )
    env.update(extra)
    return env


class ServiceProcesses:
    """Launches ``python -m <module> <args>``; whatever is still running at close is killed."""

    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.module = module
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", self.module, *(args or ("run",))],
            env={**self.env, **extra_env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)


def failure_text(proc: subprocess.Popen[bytes]) -> str:
    _, err = proc.communicate(timeout=10)
    return f"service exited with {proc.returncode}: {err.decode(errors='replace')[-3000:]}"
