"""The operator's pack, with the real tools: the alert rules pass `promtool check rules` and
their unit tests (`promtool test rules`), every PromQL expression of the Grafana dashboard
parses (promtool, on a rule file made of them), and every metric the rules, their tests
and the dashboard name is one the five services really export: their /metrics, scraped
from the services running as processes. The chart's `helm test` script runs against them.

promtool comes from Debian's prometheus package (`make promtool`, which .ci/run calls
before the tests). A missing promtool fails these tests: CI installs it, so a skip there
would hide rules nobody checked. TRIBUTARY_SKIP_PROMTOOL=1 skips them on a machine
where it cannot be installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]  # no stubs in the lock file
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from simulators.stack import secrets_env
from simulators.system import SERVICES, LocalSystem, SystemConfig
from tributary.metrics import Metrics
from tributary_testing.infra import create_mysql_database, drop_run_data
from tributary_testing.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "deploy" / "helm" / "tributary" / "files"
RULES = FILES / "prometheus" / "tributary-rules.yaml"
RULE_TESTS = Path(__file__).parent / "prometheus" / "tributary-rules.test.yaml"
DASHBOARD = FILES / "grafana" / "tributary.json"
HELM_TEST = FILES / "helm_test.py"
#: series Prometheus itself makes for every target, not the services
PROMETHEUS_SERIES = {"up"}
#: labels Prometheus adds to a target's series (the job is the service's name)
TARGET_LABELS = {"job", "instance"}
#: suffixes of the series each metric type is exposed as (OpenMetrics / text format)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("TRIBUTARY_SKIP_PROMTOOL") == "1":
            pytest.skip("promtool is missing and TRIBUTARY_SKIP_PROMTOOL=1")
        pytest.fail("promtool is missing: `make promtool` installs it (Debian's prometheus)")
    return found


def run_promtool(promtool: str, *args: str | Path) -> str:
    done = subprocess.run(
        [promtool, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


# -- PromQL: the expressions, and the metric names in them --------------------------------


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


#: Grafana's variables, as Prometheus would see them once Grafana filled them in
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
}  # fmt: skip


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers left once strings, label
    matchers, ranges, label lists and function calls are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (a regex may hold anything)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"[A-Za-z_][A-Za-z0-9_]*\s*\(", "(", text)  # function and aggregation names
    names = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text))
    return {name for name in names if name.lower() not in PROMQL_WORDS}


def test_metric_names_are_found_in_expressions() -> None:
    expr = (
        'sum by (stream) (label_replace(increase(tributary_events_dead_lettered_total{a="b"}'
        '[15m]), "stream", "$1.dlq", "stream", "(.+)")) > 0 and on (stream) '
        'max by (le) (up{job=~"x|y"}) unless time() - foo_seconds offset 5m'
    )
    assert metric_names(expr) == {"tributary_events_dead_lettered_total", "up", "foo_seconds"}
    assert metric_names("histogram_quantile(0.95, sum by (le) (rate(a_bucket[1m])))") == {
        "a_bucket"
    }


# -- the rules ---------------------------------------------------------------------------


def test_the_rules_pass_promtool_check(promtool: str) -> None:
    out = run_promtool(promtool, "check", "rules", RULES)
    assert "SUCCESS" in out


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    out = run_promtool(promtool, "test", "rules", RULE_TESTS)
    assert "SUCCESS" in out


def test_every_alert_the_rules_define_has_a_unit_test() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested


def test_every_dashboard_expression_parses(promtool: str, tmp_path: Path) -> None:
    """promtool has no offline `query`: each expression becomes a recording rule, which
    `check rules` parses."""
    expressions = dashboard_expressions()
    assert len(expressions) > 50
    rules = [
        {"record": f"tributary:dashboard_query_{i}", "expr": grafana_to_promql(expr)}
        for i, expr in enumerate(expressions)
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = run_promtool(promtool, "check", "rules", path)
    assert f"SUCCESS: {len(rules)} rules found" in out


def test_the_dashboard_has_a_row_per_service() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert rows == ["System", "snapshot", "gmail_fetch", "traffic_sync", "alert", "aggregation"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_a_service_row_selects_only_its_own_service() -> None:
    """Its group, job and leases: a row copied from another must not show that one."""
    row = ""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        for target in panel["targets"]:
            selected = re.findall(r'(?:group|job)="([^"]+)"|lease=~"([^:"]+):', target["expr"])
            names = {a or b for a, b in selected}
            if row == "System":
                assert names == set(), target["expr"]
            else:
                metrics = metric_names(grafana_to_promql(target["expr"]))
                own = all(m.startswith(row) for m in metrics)
                assert names == {row} or (own and names == set()), target["expr"]


# -- a real scrape -----------------------------------------------------------------------


@dataclass
class Scrape:
    system: LocalSystem
    api_tokens: str
    #: service -> its /metrics text
    texts: dict[str, str]

    def series(self) -> dict[str, set[frozenset[str]]]:
        """Every series name exported (with histogram and counter suffixes), with the
        label name sets seen on it; a family without samples yet by its type's names."""
        found: dict[str, set[frozenset[str]]] = {}
        for text in self.texts.values():
            for family in text_string_to_metric_families(text):
                for suffix in SUFFIXES.get(family.type, ("",)):
                    found.setdefault(family.name + suffix, set())
                for sample in family.samples:
                    found.setdefault(sample.name, set()).add(frozenset(sample.labels))
        return found


def declared_label_names() -> dict[str, frozenset[str]]:
    """Label names of the shared metrics as declared, for series a short run leaves
    without samples (a lagging group)."""
    names: dict[str, frozenset[str]] = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            labels = frozenset(metric._labelnames)
            for suffix in SUFFIXES[str(metric._type)]:
                names[metric._name + suffix] = labels
    return names


@pytest.fixture(scope="module")
def scrape(
    redis_url: str, postgres_url: str, mysql_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scrape]:
    """The five services as processes, each having done some work: one reading through
    alert, a retention pass each (every second here); then each /metrics once."""
    run = uuid.uuid4().hex[:8]
    prefix = f"pack_{run}:"
    schemas = {name: f"pack_{run}_{name}" for name in SERVICES if name != "traffic_sync"}
    run_mysql_url = create_mysql_database(mysql_url, f"pack_{run}")
    secrets = secrets_env()
    config = SystemConfig(
        redis_url=redis_url,
        postgres_url=postgres_url,
        mysql_url=run_mysql_url,
        stream_prefix=prefix,
        log_dir=tmp_path_factory.mktemp("logs"),
        schemas=schemas,
        log_level="WARNING",
        env={**secrets, "RETENTION_INTERVAL_SECONDS": "1", "ALERT_READ_BLOCK_MS": "100"},
    )
    system = LocalSystem(config)
    auth = {"Authorization": f"Bearer {secrets['API_TOKENS'].split(':')[1]}"}

    def metrics_of(name: str) -> str:
        return httpx.get(f"{system.url(name)}/metrics", headers=auth, timeout=10).text

    def worked(name: str) -> bool:
        system.check_alive(name)
        text = metrics_of(name)
        passed = re.search(r"^tributary_retention_last_pass_timestamp_seconds [1-9]", text, re.M)
        return passed is not None and (
            name != "alert" or "tributary_events_processed_total{" in text
        )

    try:
        system.migrate()
        system.start_all()
        system.wait_ready()
        reading = {"device_id": "aq-1", "metric": "temp", "value": 21.5}
        r = httpx.post(f"{system.url('alert')}/readings", json=reading, headers=auth)
        assert r.status_code == 202, r.text
        for name in system.services:
            wait_until(partial(worked, name), None, 60, f"{name}: work on /metrics")
        yield Scrape(system, secrets["API_TOKENS"], {n: metrics_of(n) for n in system.services})
    finally:
        system.stop_all()
        drop_run_data(redis_url, prefix, postgres_url, schemas.values(), run_mysql_url)


@pytest.mark.parametrize(
    "source",
    ["dashboard", "rules", "rule tests"],
)
def test_every_metric_named_is_exported_by_the_services(scrape: Scrape, source: str) -> None:
    expressions = {
        "dashboard": dashboard_expressions(),
        "rules": rule_expressions(),
        "rule tests": [str(s["series"]) for s in input_series()],
    }[source]
    exported = set(scrape.series()) | PROMETHEUS_SERIES
    named = set().union(*(metric_names(grafana_to_promql(e)) for e in expressions))
    assert named
    assert sorted(named - exported) == []


def input_series() -> list[dict[str, Any]]:
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    return [series for test in tests for series in test["input_series"]]


def test_the_rule_tests_series_have_the_labels_of_a_real_scrape(scrape: Scrape) -> None:
    exported = scrape.series()
    declared = declared_label_names()
    for series in input_series():
        name, _, labels = series["series"].partition("{")
        label_names = set(re.findall(r"(\w+)=", labels)) - TARGET_LABELS
        if name in PROMETHEUS_SERIES:
            assert label_names == set()
            continue
        seen = exported[name] or {declared[name]}
        assert frozenset(label_names) in seen, (series["series"], seen)


def test_every_service_says_it_is_ready(scrape: Scrape) -> None:
    for name, text in scrape.texts.items():
        assert re.search(r"^tributary_ready 1\.0$", text, re.M), name


# -- helm test ---------------------------------------------------------------------------


def run_helm_test(scrape: Scrape, api_tokens: str) -> subprocess.CompletedProcess[str]:
    system = scrape.system
    env = {
        **os.environ,
        "READYZ_URLS": " ".join(f"{system.url(n)}/readyz" for n in system.services),
        "API_URL": f"{system.url('alert')}/rules",
        "API_SCOPE": "alert:read",
        "API_TOKENS": api_tokens,
        "TEST_DEADLINE_SECONDS": "5",
    }
    return subprocess.run(
        [sys.executable, "-c", HELM_TEST.read_text()],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_helm_test_script_passes_against_the_running_services(scrape: Scrape) -> None:
    done = run_helm_test(scrape, f"ci:not-this-one-0000000:snapshot:read,{scrape.api_tokens}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("ok: GET") == len(SERVICES) + 1
    assert "entry 'demo'" in done.stdout
    token = scrape.api_tokens.split(":")[1]
    assert token not in done.stdout + done.stderr


def test_the_helm_test_script_fails_without_a_token_that_may_call_the_route(
    scrape: Scrape,
) -> None:
    done = run_helm_test(scrape, "ci:token-without-alert-00000:snapshot:read")
    assert done.returncode == 1
    assert "no API_TOKENS entry in the Secret grants alert:read" in done.stdout
    wrong = run_helm_test(scrape, "ops:a-token-the-services-do-not-know:alert:read")
    assert wrong.returncode == 1
    assert "-> 401" in wrong.stdout


def test_the_compose_prometheus_config_passes_promtool_check(promtool: str, tmp_path: Path) -> None:
    """The grafana profile's Prometheus config, with its container paths pointed at the
    files compose mounts there."""
    config_file = ROOT / "deploy" / "compose" / "prometheus" / "prometheus.yml"
    token = tmp_path / "metrics-token"
    token.write_text("a-token")
    text = config_file.read_text()
    text = text.replace("/etc/prometheus/rules/tributary-rules.yaml", str(RULES))
    text = text.replace("/tmp/metrics-token", str(token))
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    out = run_promtool(promtool, "check", "config", config)
    assert "SUCCESS" in out
    assert "11 rules found" in out
