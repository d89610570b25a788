"""The Helm chart, with real Helm (helm-python-sdk): lint, render with several value
combinations, validate every manifest offline with kubernetes-validate --strict."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import helm_python
import jsonschema  # type: ignore[import-untyped]  # no stubs in the lock file
import kubernetes_validate  # type: ignore[import-untyped]  # ships no py.typed
import pytest
import yaml  # type: ignore[import-untyped]  # no stubs in the lock file

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "tributary"
#: bundled with kubernetes-validate, so validation needs no network
KUBE_VERSION = "1.31.0"
SERVICES = ("aggregation", "alert", "gmail_fetch", "snapshot", "traffic_sync")
#: KEDA's CRDs and its Redis scalers' documented keys, pinned (tests/deploy/keda/README.md)
KEDA = Path(__file__).resolve().parent / "keda"
#: the services whose stream consumption KEDA may scale
LAG_SCALED = ("alert", "gmail_fetch", "snapshot")
KEDA_ON = [f"services.{s}.keda.enabled=true" for s in LAG_SCALED]

COMBINATIONS: dict[str, list[str]] = {
    "defaults": [],
    "all-on": [
        "otel.enabled=true",
        "networkPolicy.enabled=true",
        "secrets.existingSecret=tributary-prod",
        *(f"services.{s}.autoscaling.enabled=true" for s in SERVICES),
        *(f"services.{s}.replicas=3" for s in SERVICES),
    ],
    "one-off": ["services.gmail_fetch.enabled=false"],
    "hpa": [
        "services.snapshot.autoscaling.enabled=true,services.alert.autoscaling.enabled=true",
        "services.alert.autoscaling.maxReplicas=10",
    ],
    "network-policy": [
        "networkPolicy.enabled=true",
        "networkPolicy.allowedFrom[0].namespaceSelector.matchLabels.team=ops",
    ],
    "existing-secret": ["secrets.existingSecret=tributary-prod"],
    "monitoring": [
        "serviceMonitor.enabled=true,prometheusRule.enabled=true,grafanaDashboard.enabled=true",
        "prometheusRule.labels.release=kube-prometheus-stack",
        "grafanaDashboard.annotations.grafana_folder=Tributary",
    ],
    "chart-made-secret": [
        "secrets.values.REDIS_URL=redis://redis:6379/0",
        "secrets.values.SNAPSHOT_ENCRYPTION_KEY=not-a-real-key",
    ],
    "no-migrations-no-pdb": ["migrations.enabled=false,podDisruptionBudget.enabled=false"],
    "keda-single": [
        *KEDA_ON,
        "redis.address=redis.data:6379",
        "services.snapshot.autoscaling.enabled=true,services.traffic_sync.autoscaling.enabled=true",
        "services.alert.keda.maxReplicaCount=12,services.alert.keda.lagCount=500",
    ],
    "keda-sentinel": [
        *KEDA_ON,
        "redis.mode=sentinel,redis.sentinelMaster=tributary,redis.tls=true",
        "redis.sentinels={sentinel-0.data:26379,sentinel-1.data:26379}",
        "global.env.STREAM_PREFIX=prod:,secrets.existingSecret=tributary-prod",
    ],
    "extra-env": [
        "services.alert.env.ALERT_SMTP_HOST=smtp.example.com",
        "services.alert.extraEnv[0].name=ALERT_SMTP_USERNAME",
        "services.alert.extraEnv[0].value=alerts",
        "global.image.registry=registry.example.com/tributary,global.image.tag=1.2.3",
    ],
}


def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            for i, item in enumerate(value):
                if i < len(into[key]) and isinstance(item, dict):
                    merge(into[key][i], item)
                elif i >= len(into[key]):
                    into[key].append(item)
        else:
            into[key] = value


def values_of(sets: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for expression in sets:
        merge(values, helm_python.parse_set_string(expression))
    return values


def render(sets: list[str]) -> list[dict[str, Any]]:
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(
        values_of(sets), name="tributary", namespace="tributary", is_install=True
    )
    documents = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                assert isinstance(document, dict), path
                documents.append(document)
    return documents


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def test_lint_strict_is_clean() -> None:
    report = helm_python.lint(CHART, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("sets", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_lint_strict_with_values(sets: list[str]) -> None:
    report = helm_python.lint(CHART, values_of(sets), strict=True)
    assert report["errors"] == []


@pytest.mark.parametrize("sets", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_every_manifest_validates(sets: list[str]) -> None:
    documents = render(sets)
    assert documents
    for document in documents:
        if document["apiVersion"].startswith("keda.sh/"):
            validate_keda(document)
            continue
        if document["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: not in the bundled schemas
        kubernetes_validate.validate(document, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("sets", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_every_deployment_has_probes_resources_and_security_context(sets: list[str]) -> None:
    deployments = of_kind(render(sets), "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for container in pod["containers"]:
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
            resources = container["resources"]
            assert resources["requests"]["cpu"]
            assert resources["requests"]["memory"]
            assert resources["limits"]["memory"]
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert security["seccompProfile"]["type"] == "RuntimeDefault"
            assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_defaults() -> None:
    documents = render([])
    deployments = {d["metadata"]["name"]: d for d in of_kind(documents, "Deployment")}
    assert sorted(deployments) == sorted(f"tributary-{s.replace('_', '-')}" for s in SERVICES)
    for service in SERVICES:
        deployment = deployments[f"tributary-{service.replace('_', '-')}"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert [*container["command"], *container["args"]] == ["python", "-m", service, "run"]
        assert container["image"] == f"ghcr.io/tributary/{service}:0.1.0"
    assert len(of_kind(documents, "Service")) == 5
    assert len(of_kind(documents, "PodDisruptionBudget")) == 5
    assert len(of_kind(documents, "ServiceAccount")) == 1
    assert of_kind(documents, "HorizontalPodAutoscaler") == []
    assert of_kind(documents, "NetworkPolicy") == []
    assert of_kind(documents, "ServiceMonitor") == []
    assert of_kind(documents, "Secret") == [], "no secrets in values by default"
    jobs = of_kind(documents, "Job")
    assert len(jobs) == 5
    for job in jobs:
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["migrate"]
    env_names = {
        e["name"]
        for d in of_kind(documents, "Deployment")
        for e in d["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_names


def test_one_service_off() -> None:
    documents = render(COMBINATIONS["one-off"])
    names = {d["metadata"]["name"] for d in documents}
    assert not any("gmail-fetch" in name for name in names)
    assert len(of_kind(documents, "Deployment")) == 4


def test_hpa_replaces_fixed_replicas() -> None:
    documents = render(COMBINATIONS["hpa"])
    hpas = {d["metadata"]["name"]: d for d in of_kind(documents, "HorizontalPodAutoscaler")}
    assert sorted(hpas) == ["tributary-alert", "tributary-snapshot"]
    assert hpas["tributary-alert"]["spec"]["maxReplicas"] == 10
    for deployment in of_kind(documents, "Deployment"):
        has_hpa = deployment["metadata"]["name"] in hpas
        assert ("replicas" in deployment["spec"]) is not has_hpa


def test_existing_secret_and_otel() -> None:
    documents = render(COMBINATIONS["all-on"])
    assert of_kind(documents, "Secret") == []
    assert len(of_kind(documents, "NetworkPolicy")) == 5
    for deployment in of_kind(documents, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tributary-prod"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http")
    traffic = next(
        d
        for d in of_kind(documents, "Deployment")
        if d["metadata"]["name"].endswith("traffic-sync")
    )
    env = {e["name"]: e for e in traffic["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "TRAFFIC_SYNC_DATABASE_URL"


def test_egress_allow_lists_reach_every_service() -> None:
    documents = render(
        [
            "egress.allowNetworks[0]=10.20.0.0/16",
            "egress.allowNetworks[1]=fd12:3456::/48",
            "egress.allowHosts[0]=receiver.monitoring.svc.cluster.local",
        ]
    )
    for deployment in of_kind(documents, "Deployment"):
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["EGRESS_ALLOW_NETWORKS"]["value"] == "10.20.0.0/16,fd12:3456::/48"
        assert env["EGRESS_ALLOW_HOSTS"]["value"] == "receiver.monitoring.svc.cluster.local"
        assert env["EGRESS_MAX_RESPONSE_BYTES"]["value"] == "33554432"


def test_chart_made_secret_is_a_hook_before_the_migrations() -> None:
    documents = render(COMBINATIONS["chart-made-secret"])
    (secret,) = of_kind(documents, "Secret")
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < 0
    assert secret["stringData"]["REDIS_URL"] == "redis://redis:6379/0"


def test_service_monitor() -> None:
    documents = render(["serviceMonitor.enabled=true"])
    monitors = of_kind(documents, "ServiceMonitor")
    assert len(monitors) == 5
    assert all(m["spec"]["endpoints"][0]["path"] == "/metrics" for m in monitors)


@pytest.mark.parametrize(
    "bad",
    [
        "services.alert.replicas=-1",
        "services.alert.replicas=many",
        "services.snapshot.resources.limits.memory=lots",
        "securityContext.readOnlyRootFilesystem=false",
        "services.nosuch.enabled=true",
        "otel.endpoint=jaeger:4318",
        "global.image.pullPolicy=Sometimes",
        "services.alert.env.bad-name=1",
        "egress.allowNetworks[0]=10.0.0.0",
        "egress.allowHosts[0]=http://sink/",
        "egress.maxResponseBytes=12",
        "redis.mode=cluster",  # not supported yet
        "redis.mode=sentinel",  # no sentinels
        "redis.sentinels[0]=sentinel-0",  # no port
        "redis.address=redis://redis:6379",
        "services.traffic_sync.keda.enabled=true",  # consumes no stream
        "services.aggregation.keda.enabled=true",
        # every service holds leader-lease periodic jobs and serves its API
        *(f"services.{s}.keda.minReplicaCount=0" for s in LAG_SCALED),
        "services.alert.keda.lagCount=0",
    ],
)
def test_schema_rejects_bad_values(bad: str) -> None:
    chart = helm_python.Chart.load(CHART)
    with pytest.raises(helm_python.HelmValuesError):
        chart.render(values_of([bad]), name="tributary", namespace="tributary")


def test_values_schema_is_json_and_describes_every_default() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults) <= set(schema["properties"])
    helm_python.Chart.load(CHART).validate_schema(copy.deepcopy(defaults))


def test_notes_say_how_to_reach_the_apis_and_tail_a_stream() -> None:
    chart = helm_python.Chart.load(CHART)
    notes = chart.render({}, name="tributary", namespace="tributary")[
        "tributary/templates/NOTES.txt"
    ]
    assert "port-forward svc/tributary-alert" in notes
    assert "python -m tributary tail" in notes


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_apis_listen_on_all_interfaces_with_tokens_from_the_secret() -> None:
    documents = render([])
    for deployment in of_kind(documents, "Deployment"):
        env = env_of(deployment)
        assert env["HTTP_HOST"] == "0.0.0.0"
        assert env["API_TOKENS"]["secretKeyRef"]["key"] == "API_TOKENS"
        assert env["METRICS_PORT"] == "9090"
        assert env["HTTP_DOCS"] == "off"
        assert "OIDC_ISSUER" not in env
    for service in of_kind(documents, "Service"):
        assert {"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"} in (
            service["spec"]["ports"]
        )


def test_oidc_and_metrics_behind_a_token() -> None:
    documents = render(
        [
            "api.oidc.issuer=https://id.example.com/realms/ops",
            "api.oidc.audience=tributary",
            "api.metricsPort=0",
            "serviceMonitor.enabled=true",
        ]
    )
    env = env_of(of_kind(documents, "Deployment")[0])
    assert env["OIDC_ISSUER"] == "https://id.example.com/realms/ops"
    assert env["OIDC_AUDIENCE"] == "tributary"
    assert "METRICS_PORT" not in env
    endpoint = of_kind(documents, "ServiceMonitor")[0]["spec"]["endpoints"][0]
    assert endpoint["port"] == "http"
    assert endpoint["authorization"]["credentials"]["key"] == "METRICS_TOKEN"


def helm_test_pod(documents: list[dict[str, Any]]) -> dict[str, Any]:
    (pod,) = of_kind(documents, "Pod")
    return pod


def test_the_helm_test_hook_checks_every_service_and_calls_the_api_with_a_token() -> None:
    pod = helm_test_pod(render([]))
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never"
    assert spec["securityContext"]["runAsNonRoot"] is True
    (container,) = spec["containers"]
    # a service image the chart already uses: no other image to pull or trust
    assert container["image"] == "ghcr.io/tributary/aggregation:0.1.0"
    script = (CHART / "files" / "helm_test.py").read_text()
    assert container["command"] == ["python", "-c", script]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["READYZ_URLS"].split() == [
        f"http://tributary-{s.replace('_', '-')}:8000/readyz" for s in SERVICES
    ]
    assert env["API_URL"] == "http://tributary-alert:8000/rules"
    assert env["API_SCOPE"] == "alert:read"
    assert env["API_TOKENS"]["secretKeyRef"] == {
        "name": "tributary-secrets",
        "key": "API_TOKENS",
        "optional": True,
    }


def test_the_helm_test_hook_follows_the_enabled_services() -> None:
    env = {
        e["name"]: e.get("value")
        for e in helm_test_pod(
            render(["services.alert.enabled=false,services.aggregation.enabled=false"])
        )["spec"]["containers"][0]["env"]
    }
    assert "alert" not in env["READYZ_URLS"]
    assert "API_URL" not in env  # the route's service is off: readiness only
    assert of_kind(render(["helmTest.enabled=false"]), "Pod") == []


def test_a_network_policy_lets_the_helm_test_pod_in() -> None:
    documents = render(COMBINATIONS["network-policy"])
    labels = helm_test_pod(documents)["metadata"]["labels"]
    for policy in of_kind(documents, "NetworkPolicy"):
        selectors = [p["podSelector"]["matchLabels"] for p in policy["spec"]["ingress"][0]["from"]
                     if "podSelector" in p]  # fmt: skip
        assert any(s.items() <= labels.items() for s in selectors)


def test_the_helm_test_script_picks_the_first_token_that_grants_the_scope() -> None:
    spec = importlib.util.spec_from_file_location("helm_test", CHART / "files" / "helm_test.py")
    assert spec is not None
    assert spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    entries = "ci:token-for-ci-0000000:snapshot:read\nops:token-for-ops-000000:alert:* , all:t3:*"
    assert script.token_for(entries, "alert:read") == ("ops", "token-for-ops-000000")
    assert script.token_for(entries, "aggregation:write") == ("all", "t3")
    assert script.token_for("ci:token-for-ci-0000000:snapshot:read", "alert:read") is None


def test_the_operators_pack_is_off_by_default_and_one_source_when_on() -> None:
    defaults = render([])
    assert of_kind(defaults, "PrometheusRule") == []
    assert of_kind(defaults, "ConfigMap") == []
    documents = render(COMBINATIONS["monitoring"])
    (rule,) = of_kind(documents, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    plain = yaml.safe_load((CHART / "files" / "prometheus" / "tributary-rules.yaml").read_text())
    assert rule["spec"] == plain
    (dashboard,) = of_kind(documents, "ConfigMap")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["annotations"] == {"grafana_folder": "Tributary"}
    source = (CHART / "files" / "grafana" / "tributary.json").read_text()
    assert json.loads(dashboard["data"]["tributary.json"]) == json.loads(source)


def test_each_service_is_scraped_as_the_job_named_after_it() -> None:
    """The alert rules and the dashboard select a service by job="<service>"."""
    documents = render(["serviceMonitor.enabled=true"])
    services = {s["metadata"]["name"]: s for s in of_kind(documents, "Service")}
    for monitor in of_kind(documents, "ServiceMonitor"):
        label = monitor["spec"]["jobLabel"]
        service = services[monitor["metadata"]["name"]]
        assert service["metadata"]["labels"][label] in SERVICES
        assert service["metadata"]["labels"][label].replace("_", "-") in service["metadata"]["name"]


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` refusing unknown fields, as the API server's strict field validation
    does (objects with listed properties and no x-kubernetes-preserve-unknown-fields)."""
    out = {k: v for k, v in schema.items() if k not in ("properties", "items")}
    if "properties" in schema:
        out["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if isinstance(schema.get("items"), dict):
        out["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        out["additionalProperties"] = strict(schema["additionalProperties"])
    return out


def keda_schema(kind: str) -> dict[str, Any]:
    """The openAPIV3Schema of KEDA's CRD of ``kind`` (v1alpha1), made strict."""
    crd = yaml.safe_load((KEDA / f"keda.sh_{kind.lower()}s.yaml").read_text())
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = version["schema"]["openAPIV3Schema"]
    # the API server checks apiVersion, kind and metadata itself
    schema["properties"]["metadata"] = {"type": "object"}
    return strict(schema)


def validate_keda(document: dict[str, Any]) -> None:
    assert document["apiVersion"] == "keda.sh/v1alpha1"
    jsonschema.Draft7Validator(keda_schema(document["kind"])).validate(document)
    kubernetes_validate.validate(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": document["metadata"]},
        KUBE_VERSION,
        strict=True,
    )  # metadata (names, labels) checked as any object's


def test_the_keda_schemas_refuse_what_the_api_server_would() -> None:
    documents = render(COMBINATIONS["keda-single"])
    scaled = copy.deepcopy(of_kind(documents, "ScaledObject")[0])
    scaled["spec"]["minReplicaCount"] = "one"
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(scaled)
    auth = copy.deepcopy(of_kind(documents, "TriggerAuthentication")[0])
    auth["spec"]["secretTargetRef"][0]["secret"] = auth["spec"]["secretTargetRef"][0].pop("name")
    with pytest.raises(jsonschema.ValidationError):
        validate_keda(auth)


def consumed_streams() -> dict[str, set[str]]:
    """What each service's runners read, from the services' code (group = service name)."""
    from alert.samples import SOURCES
    from tributary import catalog
    from tributary.privileges import NEEDS

    consumed = {
        "alert": set(SOURCES),
        "gmail_fetch": {catalog.GMAIL_JOBS},
        "snapshot": {catalog.OUTLINE_COLLECT},
    }
    for service, streams in consumed.items():
        assert streams <= set(NEEDS[service].streams), service
    return consumed


def test_no_keda_objects_by_default() -> None:
    documents = render([])
    assert of_kind(documents, "ScaledObject") == []
    assert of_kind(documents, "TriggerAuthentication") == []


@pytest.mark.parametrize("mode", ["single", "sentinel"])
def test_a_scaled_object_per_consumer_with_a_trigger_per_stream_and_group(mode: str) -> None:
    documents = render(COMBINATIONS[f"keda-{mode}"])
    prefix = "prod:" if mode == "sentinel" else ""
    scaled = {d["metadata"]["name"]: d for d in of_kind(documents, "ScaledObject")}
    auths = {d["metadata"]["name"]: d for d in of_kind(documents, "TriggerAuthentication")}
    secret = "tributary-prod" if mode == "sentinel" else "tributary-secrets"
    for service, streams in consumed_streams().items():
        name = f"tributary-{service.replace('_', '-')}"
        spec = scaled.pop(name)["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": name}  # fmt: skip
        assert spec["minReplicaCount"] >= 1
        triggers = spec["triggers"]
        assert {t["metadata"]["stream"] for t in triggers} == {prefix + s for s in streams}
        assert len(triggers) == len(streams)
        for trigger in triggers:
            assert trigger["type"] == f"redis-{mode}-streams".replace("-single", "")
            assert trigger["metadata"]["consumerGroup"] == service
            assert int(trigger["metadata"]["lagCount"]) >= 1
            assert "activationLagCount" in trigger["metadata"]
            assert trigger["authenticationRef"]["name"] == f"{name}-redis"
        refs = {r["parameter"]: r for r in auths.pop(f"{name}-redis")["spec"]["secretTargetRef"]}
        assert refs["username"]["key"] == f"{service.upper()}_REDIS_USERNAME"
        assert refs["password"]["key"] == f"{service.upper()}_REDIS_PASSWORD"
        assert {r["name"] for r in refs.values()} == {secret}
        assert ("sentinelPassword" in refs) is (mode == "sentinel")
    assert scaled == {}, "no ScaledObject for traffic_sync or aggregation"
    assert auths == {}


def test_the_scaled_objects_follow_the_values() -> None:
    documents = render(COMBINATIONS["keda-single"])
    (alert,) = [
        d for d in of_kind(documents, "ScaledObject") if d["metadata"]["name"] == "tributary-alert"
    ]
    assert alert["spec"]["maxReplicaCount"] == 12
    assert {t["metadata"]["lagCount"] for t in alert["spec"]["triggers"]} == {"500"}
    assert {t["metadata"]["address"] for t in alert["spec"]["triggers"]} == {"redis.data:6379"}
    assert not any("enableTLS" in t["metadata"] for t in alert["spec"]["triggers"])
    sentinel = of_kind(render(COMBINATIONS["keda-sentinel"]), "ScaledObject")[0]
    metadata = sentinel["spec"]["triggers"][0]["metadata"]
    assert metadata["addresses"] == "sentinel-0.data:26379,sentinel-1.data:26379"
    assert metadata["sentinelMaster"] == "tributary"
    assert metadata["enableTLS"] == "true"


@pytest.mark.parametrize("mode", ["single", "sentinel"])
def test_never_an_hpa_and_a_scaled_object_for_one_deployment(mode: str) -> None:
    sets = [*COMBINATIONS[f"keda-{mode}"], *COMBINATIONS["all-on"]]
    documents = render(sets)
    scaled = {d["spec"]["scaleTargetRef"]["name"] for d in of_kind(documents, "ScaledObject")}
    hpas = {
        d["spec"]["scaleTargetRef"]["name"] for d in of_kind(documents, "HorizontalPodAutoscaler")
    }
    assert len(scaled) == 3
    assert hpas == {"tributary-traffic-sync", "tributary-aggregation"}  # CPU, the fallback
    for deployment in of_kind(documents, "Deployment"):
        assert "replicas" not in deployment["spec"]  # an autoscaler owns the count


def test_trigger_metadata_and_auth_parameters_are_keda_documented_keys() -> None:
    """The CRD leaves trigger metadata free-form: pin our keys to KEDA's scalers'."""
    documented = json.loads((KEDA / "scaler-keys.json").read_text())
    for mode in ("single", "sentinel"):
        documents = render(COMBINATIONS[f"keda-{mode}"])
        for scaled in of_kind(documents, "ScaledObject"):
            for trigger in scaled["spec"]["triggers"]:
                keys = documented[trigger["type"]]
                assert set(trigger["metadata"]) <= set(keys["metadata"]), trigger["type"]
                assert set(keys["required"]) <= set(trigger["metadata"])
                assert all(isinstance(v, str) for v in trigger["metadata"].values())
                auth_params = set(keys["authParams"])
        for auth in of_kind(documents, "TriggerAuthentication"):
            assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} <= auth_params


def test_sentinel_mode_reaches_every_deployment_and_job() -> None:
    documents = render(COMBINATIONS["keda-sentinel"])
    workloads = [*of_kind(documents, "Deployment"), *of_kind(documents, "Job")]
    assert len(workloads) == 10
    for workload in workloads:
        env = env_of(workload)
        assert env["REDIS_SENTINELS"] == "sentinel-0.data:26379,sentinel-1.data:26379"
        assert env["REDIS_SENTINEL_MASTER"] == "tributary"
        assert env["REDIS_SENTINEL_PASSWORD"]["secretKeyRef"]["key"] == "REDIS_SENTINEL_PASSWORD"
        assert env["REDIS_URL"]["secretKeyRef"]["key"] == "REDIS_URL"
    for workload in of_kind(render([]), "Deployment"):
        assert "REDIS_SENTINELS" not in env_of(workload)


def test_single_mode_keda_needs_the_redis_address() -> None:
    chart = helm_python.Chart.load(CHART)
    with pytest.raises(helm_python.HelmRenderError, match=r"redis\.address \(host:port\)"):
        chart.render(values_of(KEDA_ON), name="tributary", namespace="tributary")
