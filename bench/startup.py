"""Seconds from process spawn to exit of the commands people and schedulers start often.

``python -m <service> --help`` and ``check-config`` of every service, and the imports of
a Redis Streams worker as ../shared/peers's ``tributary`` rows make them (their first
message waits for these). Each command runs BENCH_ROUNDS times (default 7); the median
wall time is printed, one JSON line per command, then a summary line with the slowest
of each kind against the 0.5 s target (issue 22).

``--checkout DIR`` measures another checkout's interpreter and code (its ``.venv``), so a
before/after pair can be run alternately on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

from tributary_testing.startup import PEERS_WORKER, SERVICES

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
TARGET_S = 0.5

#: what check-config needs to find in the environment, with nothing secret in it
ENV = {
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "DATABASE_URL": "postgresql+psycopg://127.0.0.1/test",
    "SNAPSHOT_ENCRYPTION_KEY": "x" * 43 + "=",
    "GMAIL_FETCH_TOKEN_ENCRYPTION_KEYS": "x" * 43 + "=",
    "GMAIL_FETCH_OAUTH_CLIENT_ID": "bench",
    "GMAIL_FETCH_OAUTH_CLIENT_SECRET": "bench",
}


def seconds(argv: list[str], cwd: Path) -> float:
    """Median wall seconds of ``argv`` over ROUNDS runs (after one unmeasured run)."""
    env = {**os.environ, **ENV}
    env.pop("PYTHONPATH", None)
    runs = []
    for n in range(ROUNDS + 1):
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=120)
        if done.returncode != 0:  # a command that failed early would look fast
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")
        if n:
            runs.append(time.perf_counter() - started)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--checkout", type=Path, default=Path.cwd())
    args = parser.parse_args()
    root = args.checkout.resolve()
    python = str(root / ".venv" / "bin" / "python")
    figures: dict[str, float] = {}
    for service in SERVICES:
        for verb in ("--help", "check-config"):
            figures[f"{service} {verb}"] = seconds([python, "-m", service, verb], root)
    figures["worker imports"] = seconds([python, "-c", PEERS_WORKER], root)
    figures["python -c pass"] = seconds([python, "-c", "pass"], root)
    for name, value in figures.items():
        print(json.dumps({"command": name, "median_s": round(value, 3)}))
    worst = {
        kind: max(v for k, v in figures.items() if k.endswith(kind))
        for kind in ("--help", "check-config", "worker imports")
    }
    print(
        json.dumps(
            {
                "checkout": str(root),
                "rounds": ROUNDS,
                "slowest_s": {k: round(v, 3) for k, v in worst.items()},
                "target_s": TARGET_S,
                "within_target": all(v <= TARGET_S for v in worst.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
