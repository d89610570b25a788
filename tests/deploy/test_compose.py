"""docker-compose.yml: valid Compose, the services run as the tests run them, and every
variable the settings models read is in each service's environment."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]  # no stubs in the lock file
from pydantic_settings import BaseSettings

from tributary.config import settings_table

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SETTINGS = {
    "snapshot": "snapshot.config:SnapshotSettings",
    "gmail_fetch": "gmail_fetch.config:GmailFetchSettings",
    "traffic_sync": "traffic_sync.config:TrafficSyncSettings",
    "alert": "alert.config:AlertSettings",
    "aggregation": "aggregation.config:AggregationSettings",
}
INFRA = ("redis", "postgres", "mariadb", "jaeger")
GRAFANA_PROFILE = ("prometheus", "grafana")


def settings_class(service: str) -> type[BaseSettings]:
    module, _, name = SETTINGS[service].partition(":")
    cls: object = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type)
    assert issubclass(cls, BaseSettings)
    return cls


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def service(name: str) -> dict[str, Any]:
    entry = compose()["services"][name]
    assert isinstance(entry, dict)
    return entry


def entry_name(pkg: str) -> str:
    return pkg.replace("_", "-")


def argv(entry: dict[str, Any]) -> list[str]:
    return [*entry.get("entrypoint", []), *entry.get("command", [])]


def test_every_service_has_settings_listed() -> None:
    services = sorted(p.name for p in (ROOT / "services").iterdir() if p.is_dir())
    assert services == sorted(SETTINGS)


def test_validates_against_the_compose_spec() -> None:
    tool = shutil.which("check-jsonschema")
    assert tool is not None
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", INFRA)
def test_infrastructure_has_health_checks(name: str) -> None:
    entry = service(name)
    assert entry["healthcheck"]["test"]
    assert entry.get("restart") == "unless-stopped"


def test_infrastructure_versions_and_volumes() -> None:
    assert service("redis")["image"].startswith("redis:7")
    assert "--appendonly" in service("redis")["command"]
    assert service("postgres")["image"].startswith("postgres:16")
    assert service("mariadb")["image"].startswith("mariadb:11")
    assert service("jaeger")["image"].startswith("jaegertracing/all-in-one:")
    assert any("16686" in str(p) for p in service("jaeger")["ports"])
    volumes = compose()["volumes"]
    for name in ("redis", "postgres", "mariadb"):
        mounts = service(name)["volumes"]
        named = [m.split(":")[0] for m in mounts]
        assert any(v in volumes for v in named), f"{name} keeps its data in a named volume"


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_service_command_is_the_one_the_tests_run(pkg: str) -> None:
    # tributary_testing.process launches ``python -m <pkg> run``, as the image's
    # ENTRYPOINT + CMD do
    assert argv(service(entry_name(pkg))) == ["python", "-m", pkg, "run"]
    assert argv(service(f"{entry_name(pkg)}-migrate")) == ["python", "-m", pkg, "migrate"]


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_service_waits_for_infrastructure_and_its_migration(pkg: str) -> None:
    entry = service(entry_name(pkg))
    depends = entry["depends_on"]
    for name in INFRA:
        assert depends[name]["condition"] == "service_healthy"
    assert depends[f"{entry_name(pkg)}-migrate"]["condition"] == "service_completed_successfully"
    migrate = service(f"{entry_name(pkg)}-migrate")
    for name in INFRA:
        assert migrate["depends_on"][name]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_service_runs_hardened_with_ports_and_restart(pkg: str) -> None:
    entry = service(entry_name(pkg))
    assert entry["restart"] == "unless-stopped"
    assert entry["read_only"] is True
    assert any(t.startswith("/tmp") for t in entry["tmpfs"])
    assert entry["cap_drop"] == ["ALL"]
    assert any(str(p).endswith(":8000") for p in entry["ports"])
    assert entry["environment"]["HTTP_PORT"] == "8000"
    assert "jaeger:4318" in entry["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_service_image_is_built_from_the_one_dockerfile(pkg: str) -> None:
    project = tomllib.loads((ROOT / "services" / pkg / "pyproject.toml").read_text())
    for name in (entry_name(pkg), f"{entry_name(pkg)}-migrate"):
        entry = service(name)
        build = entry["build"]
        assert build["context"] == "."
        assert build["dockerfile"] == "Dockerfile"
        assert (ROOT / build["context"] / build["dockerfile"]).is_file()
        # the label carries the service's own description, as pyproject.toml has it
        assert build["args"] == {"SERVICE": pkg, "DESCRIPTION": project["project"]["description"]}
        assert entry["image"] == f"${{TRIBUTARY_REGISTRY:-tributary}}/{pkg}:${{TRIBUTARY_TAG:-dev}}"


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_the_chart_runs_the_image_compose_builds(pkg: str) -> None:
    """<registry>/<pkg>:<tag> in both: the image built with SERVICE=<pkg> is the one deployed."""
    values = yaml.safe_load((ROOT / "deploy" / "helm" / "tributary" / "values.yaml").read_text())
    assert values["services"][pkg]["image"]["repository"] == pkg


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_every_setting_is_in_the_service_environment(pkg: str) -> None:
    variables = {var for var, _, _ in settings_table(settings_class(pkg))}
    for name in (entry_name(pkg), f"{entry_name(pkg)}-migrate"):
        environment = service(name)["environment"]
        assert isinstance(environment, dict)
        missing = variables - set(environment)
        assert not missing, f"{name} lacks {sorted(missing)}"


@pytest.mark.parametrize("pkg", sorted(SETTINGS))
def test_required_settings_have_no_default(pkg: str) -> None:
    environment = service(entry_name(pkg))["environment"]
    for var, default, _ in settings_table(settings_class(pkg)):
        if default == "(required)":
            assert re.fullmatch(r"\$\{" + var + r":\?[^}]+\}", str(environment[var])), var


def test_databases() -> None:
    assert service("traffic-sync")["environment"]["DATABASE_URL"].startswith("mysql+pymysql://")
    assert "@mariadb:3306/" in service("traffic-sync")["environment"]["DATABASE_URL"]
    for pkg in ("snapshot", "gmail_fetch", "alert", "aggregation"):
        assert "@postgres:5432/" in service(entry_name(pkg))["environment"]["DATABASE_URL"]


def test_demo_profile() -> None:
    services = compose()["services"]
    demo = {name for name, entry in services.items() if "demo" in entry.get("profiles", [])}
    assert {"outline-sim", "gmail-fake", "demo-register", "demo-generate"} <= demo
    # the default profile stays free of simulators (and of the grafana profile's two)
    for name, entry in services.items():
        if name not in demo | set(GRAFANA_PROFILE):
            assert "profiles" not in entry, name
    for script in ("register.py", "generate.py"):
        assert (ROOT / "deploy" / "compose" / "demo" / script).exists()
    env = (ROOT / "deploy" / "compose" / "demo.env").read_text()
    for pkg in SETTINGS:
        for var, default, _ in settings_table(settings_class(pkg)):
            if default == "(required)":
                assert f"\n{var}=" in env, f"demo.env sets {var}"


def test_demo_env_secrets_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    values = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "compose" / "demo.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    for var, value in values.items():
        monkeypatch.setenv(var, value)
    for pkg in SETTINGS:
        settings_class(pkg)()  # raises when a demo secret is malformed


def test_makefile_targets() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in ("up", "down", "logs"):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "docker compose" in makefile


def test_throwaway_test_containers_use_the_compose_file_s_images() -> None:
    """testcontainers (tributary_testing.infra, when no local server answers) runs the
    same Redis, PostgreSQL and MariaDB images as the compose file: one set everywhere."""
    infra = (ROOT / "libs/testing/src/tributary_testing/infra.py").read_text()
    wanted = set(re.findall(r'Container\(\s*"([^"]+)"', infra))
    used = {entry["image"] for entry in compose()["services"].values() if "image" in entry}
    assert len(wanted) == 3
    assert wanted <= used, wanted - used


def host_files(entry: dict[str, Any]) -> dict[str, Path]:
    """Container path -> repository file of each bind mount (./...)."""
    found = {}
    for mount in entry["volumes"]:
        source, target = mount.split(":")[:2]
        if source.startswith("./"):
            found[target] = ROOT / source
    return found


def test_the_grafana_profile_provisions_the_charts_rules_and_dashboard() -> None:
    """Prometheus (the alert rules) and Grafana (the dashboard), only with the profile, on
    pinned images, mounting the chart's own files: one source for both deployments."""
    chart_files = ROOT / "deploy" / "helm" / "tributary" / "files"
    for name in GRAFANA_PROFILE:
        entry = service(name)
        assert entry["profiles"] == ["grafana"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+", entry["image"]), entry["image"]
        assert entry["read_only"] is True
        assert entry["healthcheck"]["test"][0] == "CMD-SHELL"
        assert all(str(p).startswith("127.0.0.1:") for p in entry["ports"])
        for path in host_files(entry).values():
            assert path.is_file(), path
    assert service("grafana")["image"].startswith("grafana/grafana:")
    prometheus = host_files(service("prometheus"))
    grafana = host_files(service("grafana"))
    assert prometheus["/etc/prometheus/rules/tributary-rules.yaml"] == (
        chart_files / "prometheus" / "tributary-rules.yaml"
    )
    dashboards = yaml.safe_load(
        grafana["/etc/grafana/provisioning/dashboards/tributary.yaml"].read_text()
    )
    folder = dashboards["providers"][0]["options"]["path"]
    assert grafana[f"{folder}/tributary.json"] == chart_files / "grafana" / "tributary.json"
    datasources = yaml.safe_load(
        grafana["/etc/grafana/provisioning/datasources/tributary.yaml"].read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def test_prometheus_scrapes_each_service_as_the_job_named_after_it() -> None:
    config = yaml.safe_load(
        host_files(service("prometheus"))["/etc/prometheus/prometheus.yml"].read_text()
    )
    rules = config["rule_files"]
    assert rules == ["/etc/prometheus/rules/tributary-rules.yaml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert sorted(jobs) == sorted(SETTINGS)
    for pkg, job in jobs.items():
        (target,) = job["static_configs"][0]["targets"]
        host, _, port = target.partition(":")
        assert host in compose()["services"], host
        assert service(host)["environment"]["HTTP_PORT"] == port
        assert service(host)["entrypoint"] == ["python", "-m", pkg]
        # /metrics wants a token with <service>:metrics: the container writes METRICS_TOKEN there
        assert job["authorization"]["credentials_file"] == "/tmp/metrics-token"
    assert "/tmp/metrics-token" in " ".join(service("prometheus")["command"])
    env = (ROOT / "deploy" / "compose" / "demo.env").read_text()
    token = re.search(r"^METRICS_TOKEN=(.+)$", env, re.M)
    assert token is not None
    assert f":{token[1]}:*" in env
