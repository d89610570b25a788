"""What a process imports before it does its work: start-up time is import time.

``python -m <service> --help`` must say its usage without the runtime, ``check-config``
must load only the settings, and a stream worker (the peers benchmark's
``tributary`` rows) neither the web stack nor the database. Checked on the list of
modules the process had loaded when it exited, not on a clock: the timings are in
docs/performance.md ("Start-up").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tributary_testing.startup import PEERS_WORKER, SERVICES

ROOT = Path(__file__).resolve().parents[1]

#: what saying the usage never needs
RUNTIME = ("sqlalchemy", "fastapi", "starlette", "redis", "httpx", "opentelemetry", "pydantic")
#: what loading and printing the settings never needs
SERVING = ("sqlalchemy", "fastapi", "starlette", "redis", "httpx", "opentelemetry")
#: what a Redis Streams worker with no HTTP API and no database never needs
WEB_AND_DATABASE = (
    "sqlalchemy",
    "fastapi",
    "starlette",
    "httpx",
    "opentelemetry.instrumentation",
    "opentelemetry.exporter",
)

#: runs a module as ``python -m`` does, then prints every module imported, at exit
#: (``-X importtime`` misses modules that ``importlib.import_module`` loads)
RUN_AND_LIST = """
import atexit, json, runpy, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = sys.argv[1:]
{action}
"""


def imported(module: str | None, *argv: str, code: str = "") -> set[str]:
    """The modules ``python -m module argv...`` (or the snippet ``code``) imported."""
    action = (
        f"exec({code!r})"
        if module is None
        else "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
    )
    done = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST.format(action=action), module or "-c", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    [listed] = [line for line in done.stderr.splitlines() if line.startswith("MODULES ")]
    return set(json.loads(listed.removeprefix("MODULES ")))


def offending(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


@pytest.mark.parametrize("service", SERVICES)
def test_help_imports_no_runtime(service: str) -> None:
    modules = imported(service, "--help")
    assert f"{service}.cli" in modules  # the verbs' declarations were read
    assert offending(modules, RUNTIME) == []
    assert f"{service}.service" not in modules


@pytest.mark.parametrize("service", SERVICES)
def test_check_config_imports_the_settings_only(service: str) -> None:
    modules = imported(service, "check-config")
    assert f"{service}.config" in modules
    assert offending(modules, SERVING) == []


def test_a_stream_worker_imports_neither_the_web_stack_nor_the_database() -> None:
    modules = imported(None, code=PEERS_WORKER)
    assert "tributary.streams.runner" in modules
    assert offending(modules, WEB_AND_DATABASE) == []


@pytest.mark.parametrize("service", SERVICES)
def test_the_declared_program_is_the_service_and_its_settings(service: str) -> None:
    """The references the CLI imports lazily name the service and its own settings class."""
    from tributary.cli import load

    program = load(f"{service}.cli:PROGRAM")
    assert program.service().name == service  # raises if the settings class differs
