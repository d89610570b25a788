"""``docker compose`` driven from a test: one project of its own (its containers,
network and volumes), the repository's compose file plus test overrides, host ports
chosen free, and the answers of ``ps`` / ``exec`` / ``stats`` as Python values.

Works with any Docker-compatible engine and Compose v2 (the test needs nothing else):
Docker itself, or podman behind its Docker API.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: containers that run once and must end with exit code 0
ONE_SHOT_SUFFIXES = ("-migrate",)


def docker_answers() -> bool:
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],  # noqa: S607
            capture_output=True, timeout=20, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@dataclass(frozen=True)
class Container:
    service: str
    name: str
    state: str
    health: str
    exit_code: int

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Container:
        return cls(
            service=str(entry.get("Service", "")),
            name=str(entry.get("Name", "")),
            state=str(entry.get("State", "")).lower(),
            health=str(entry.get("Health", "")).lower(),
            exit_code=int(entry.get("ExitCode") or 0),
        )


@dataclass
class Compose:
    root: Path
    project: str
    files: Sequence[str]
    env_file: str | None = None
    profiles: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        cmd = ["docker", "compose", "-p", self.project]
        for path in self.files:
            cmd += ["-f", path]
        if self.env_file:
            cmd += ["--env-file", self.env_file]
        for profile in self.profiles:
            cmd += ["--profile", profile]
        return [*cmd, *args]

    def run(
        self, *args: str, timeout: float = 600, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(  # noqa: S603 - docker compose with our arguments
            self.command(*args),
            cwd=self.root,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            input=stdin,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"docker compose {' '.join(args)} exited {done.returncode}:\n"
                f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )
        return done

    def ps(self) -> list[Container]:
        out = self.run("ps", "-a", "--format", "json").stdout.strip()
        if not out:
            return []
        if out.startswith("["):  # older Compose: one JSON array
            return [Container.of(e) for e in json.loads(out)]
        return [Container.of(json.loads(line)) for line in out.splitlines() if line.strip()]

    def exec(self, service: str, *argv: str, timeout: float = 60) -> str:
        return self.run("exec", "-T", service, *argv, timeout=timeout).stdout

    def wait(
        self, what: str, check: Callable[[], bool], seconds: float, every: float = 2.0
    ) -> float:
        """Poll ``check`` until true; the seconds it took, or TimeoutError naming ``what``
        with the containers' states."""
        start = time.monotonic()
        while not check():
            if time.monotonic() - start > seconds:
                states = ", ".join(f"{c.service}={c.state}/{c.health or '-'}/{c.exit_code}"
                                   for c in self.ps())  # fmt: skip
                raise TimeoutError(f"{what}: not within {seconds:.0f}s ({states})")
            time.sleep(every)
        return time.monotonic() - start

    def logs(self, *services: str, tail: int = 80) -> str:
        done = self.run("logs", "--no-color", "--tail", str(tail), *services, check=False)
        return done.stdout + done.stderr


def settled(containers: Sequence[Container], one_shots: Sequence[str]) -> bool:
    """Every one-shot exited 0, every other container running and, if it has a health
    check, healthy. Raises if a one-shot failed (waiting longer would not help)."""
    if not containers:
        return False
    for c in containers:
        if c.service in one_shots or c.service.endswith(ONE_SHOT_SUFFIXES):
            if c.state == "exited" and c.exit_code != 0:
                raise RuntimeError(f"{c.service} exited {c.exit_code}")
            if c.state != "exited":
                return False
        elif c.state != "running" or c.health not in ("", "healthy"):
            return False
    return True
