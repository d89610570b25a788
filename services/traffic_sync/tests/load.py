"""Writer processes for the load and crash tests (see writer.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

WRITER = Path(__file__).with_name("writer.py")


class Writers:
    """Writer processes incrementing node counters until :meth:`stop`."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        modes: list[str],
        nodes: int,
        concurrency: int = 8,
        rate: float = 0.0,
    ) -> None:
        args = [redis_url, prefix]
        tail = [str(concurrency), str(rate)]
        self.procs = [
            subprocess.Popen(
                [sys.executable, str(WRITER), *args, str(seed), str(nodes), mode, *tail],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed, mode in enumerate(modes)
        ]
        for proc in self.procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.strip() != "ready":
                proc.kill()
                _, err = proc.communicate()
                raise RuntimeError(f"writer did not start: {err[-2000:]}")

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)

    def stop(self) -> tuple[int, dict[int, tuple[int, int]]]:
        """Stop every writer; (operations, node -> (upload, download) written in all)."""
        ops, up, down = 0, Counter[int](), Counter[int]()
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            out, err = proc.communicate(timeout=30)
            if proc.returncode != 0:
                raise RuntimeError(f"writer failed ({proc.returncode}): {err[-2000:]}")
            report = json.loads(out)
            ops += report["ops"]
            for node, (u, d) in report["sums"].items():
                up[int(node)] += u
                down[int(node)] += d
        return ops, {node: (up[node], down[node]) for node in up | down}

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
