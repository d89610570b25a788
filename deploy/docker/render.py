"""Write every service's Dockerfile from the one template, deploy/docker/service.Dockerfile.in.

The five images differ only in the service's name and description (from its
pyproject.toml); keeping one template means a fix to the build reaches all of
them. ``python deploy/docker/render.py`` rewrites them; ``--check`` exits 1
when one is out of date (tests/deploy/test_images.py runs the check).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "docker" / "service.Dockerfile.in"
HEADER = "# Generated from deploy/docker/service.Dockerfile.in by deploy/docker/render.py.\n"


def services() -> list[str]:
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/pyproject.toml"))


def render(service: str) -> str:
    project = tomllib.loads((ROOT / "services" / service / "pyproject.toml").read_text())
    description = str(project["project"]["description"]).replace('"', '\\"')
    body = TEMPLATE.read_text().replace("@SERVICE@", service).replace("@DESCRIPTION@", description)
    first, _, rest = body.partition("\n")  # the syntax directive must stay the first line
    return f"{first}\n{HEADER}{rest}"


def stale() -> list[str]:
    """Services whose Dockerfile differs from the rendered template."""
    return [
        s for s in services() if (ROOT / "services" / s / "Dockerfile").read_text() != render(s)
    ]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        out_of_date = stale()
        for service in out_of_date:
            print(f"services/{service}/Dockerfile is out of date: run deploy/docker/render.py")
        return 1 if out_of_date else 0
    for service in services():
        (ROOT / "services" / service / "Dockerfile").write_text(render(service))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
