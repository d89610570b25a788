"""Property-based fuzzing of a service's HTTP API with schemathesis, over real HTTP.

:func:`fuzz_api` serves the app with uvicorn on a free loopback port in the
running loop and runs ``schemathesis run`` against its ``/openapi.json`` in a
subprocess: every operation, a fixed seed, a bounded number of examples, and
the checks that no answer is a 5xx, that every status is documented, that
every body matches its documented schema and that an operation declaring a
security requirement refuses a request without the credentials (ignored_auth).
The figures (operations, cases, seconds) come from schemathesis' JSON report.

schemathesis is a dev dependency; it is run as a program, never imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tributary.http import HttpServer

#: the seed of every run, so that a failure reproduces
DEFAULT_SEED = 42
#: generated cases per operation and phase: enough to find the classics, fast enough for make test
DEFAULT_MAX_EXAMPLES = 30
#: a 5xx is a bug; so is an answer (any status) its own schema does not describe
DEFAULT_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "ignored_auth",
)
#: bound on one run, in seconds
DEFAULT_MAX_SECONDS = 240.0
#: schemathesis' own output kept in the report of a failed run, in characters
OUTPUT_TAIL = 12_000


@dataclass(frozen=True)
class FuzzRun:
    """What one schemathesis run did."""

    exit_code: int
    operations: int
    cases: int
    seconds: float
    output: str

    @property
    def passed(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        return f"{self.operations} operations, {self.cases} cases in {self.seconds:.1f}s"


def _command(
    schema: Path,
    url: str,
    report: Path,
    headers: Mapping[str, str],
    max_examples: int,
    seed: int,
    checks: Sequence[str],
) -> list[str]:
    command = [sys.executable, "-m", "schemathesis.cli", "run", str(schema), "--url", url]
    command += ["--seed", str(seed), "--max-examples", str(max_examples)]
    command += ["--checks", ",".join(checks), "--workers", "1", "--no-color"]
    command += ["--report", "json", "--report-json-path", str(report)]
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    return command


def _counts(report: Path) -> tuple[int, int]:
    """(operations tested, cases generated) of a JSON report; (0, 0) without one."""
    if not report.exists():
        return 0, 0
    data: dict[str, Any] = json.loads(report.read_text())
    tested = data.get("operations", {}).get("tested", 0)
    generated = data.get("test_cases", {}).get("generated", 0)
    return int(tested), int(generated)


async def _run(command: list[str], cwd: Path, max_seconds: float) -> tuple[int, str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONWARNINGS": "ignore"}
    # run in a scratch directory: no Hypothesis example database carried from an earlier
    # run (the seed alone decides the cases) and no .schemathesis left in the checkout
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        async with asyncio.timeout(max_seconds):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        return -1, out.decode(errors="replace") + f"\n(stopped after {max_seconds:g}s)"
    return proc.returncode or 0, out.decode(errors="replace")


async def fuzz_api(
    app: FastAPI,
    *,
    headers: Mapping[str, str] | None = None,
    max_examples: int = DEFAULT_MAX_EXAMPLES,
    seed: int = DEFAULT_SEED,
    checks: Sequence[str] = DEFAULT_CHECKS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
) -> FuzzRun:
    """Serve ``app`` on loopback and fuzz every operation of its OpenAPI schema.

    ``headers`` go with every request: the credentials (``tributary_testing.auth.AUTH``).
    """
    server = HttpServer(app, "127.0.0.1", 0)
    port = await server.start()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            report = Path(tmp) / "report.json"
            # from a file: /openapi.json is off unless HTTP_DOCS turns it on
            schema = Path(tmp) / "openapi.json"
            schema.write_text(json.dumps(app.openapi()))
            url = f"http://127.0.0.1:{port}"
            command = _command(schema, url, report, headers or {}, max_examples, seed, checks)
            exit_code, output = await _run(command, Path(tmp), max_seconds)
            operations, cases = _counts(report)
    finally:
        await server.stop()
    seconds = time.perf_counter() - started
    return FuzzRun(exit_code, operations, cases, seconds, output[-OUTPUT_TAIL:])
