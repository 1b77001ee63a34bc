"""The Helm chart linted (`helm lint --strict`) and rendered by real Helm v4 (tests/deploy/render.py,
through helm-python-sdk) for each tested values variant, every object validated against the
Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields fail), values checked against
values.schema.json by Helm, and the wiring between the objects checked: selectors, Services, the
router's upstream, the retrain job's volume and exit codes, the dashboard and rules ConfigMaps."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.settings import Settings
from tests.deploy.render import (
    Rendered,
    RenderFail,
    ValuesRejected,
    chart_values,
    lint_chart,
    render_chart,
    validate_values,
)

CHART = Path(__file__).resolve().parents[2] / "helm" / "zantara"
VARIANTS = sorted(p.name for p in (CHART / "ci").glob("*.yaml"))
# The chart's kubeVersion floor and the newest schemas the package ships.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.latest_version())
# prometheus-operator kinds: kubernetes-validate has no schemas for CRDs.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
FAKE_SECRET = "x" * 32


def variant(name: str) -> dict[str, Any]:
    loaded = yaml.safe_load((CHART / "ci" / name).read_text())
    assert isinstance(loaded, dict)
    return loaded


@cache
def rendered(name: str) -> Rendered:
    return render_chart(CHART, variant(name))


def objects(name: str, kind: str) -> list[dict[str, Any]]:
    return [m for m in rendered(name).manifests if m["kind"] == kind]


def one(name: str, kind: str, suffix: str = "") -> dict[str, Any]:
    found = [m for m in objects(name, kind) if m["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{name}: {kind} *{suffix}: {[m['metadata']['name'] for m in found]}"
    return found[0]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    result = spec["template"]["spec"]
    assert isinstance(result, dict)
    return result


def container_env(name: str, container: dict[str, Any]) -> dict[str, str]:
    """What a container's environment holds: the ConfigMap's settings, then its own entries (secrets
    as stand-ins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        (config,) = [
            m for m in objects(name, "ConfigMap") if m["metadata"]["name"] == source["configMapRef"]["name"]
        ]
        env.update(config["data"])
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value", FAKE_SECRET)
    return env


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in list(os.environ):
        if key.startswith("ZANTARA_"):
            monkeypatch.delenv(key)
    known = {f"ZANTARA_{field.upper()}" for field in Settings.model_fields}
    for key, value in env.items():
        if key in known:
            monkeypatch.setenv(key, value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


# --- rendering and schemas ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_every_object_is_valid_kubernetes(name: str) -> None:
    manifests = rendered(name).manifests
    assert manifests
    for manifest in manifests:
        if manifest["kind"] in CRD_KINDS:
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
            assert manifest["spec"]
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name}: {manifest['kind']} {manifest['metadata']['name']} ({version}): {error}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", VARIANTS)
def test_helm_lint_strict_finds_nothing(name: str, version: str) -> None:
    """`helm lint --strict -f ci/NAME --kube-version VERSION`: no error, no warning (information such
    as "icon is recommended" aside)."""
    report = lint_chart(CHART, variant(name), kube_version=version)
    assert report["total_charts_linted"] == 1
    assert not report["errors"], report
    assert [m for m in report["messages"] if m["severity"] != 1] == [], report


@pytest.mark.parametrize("name", VARIANTS)
def test_values_match_the_schema(name: str) -> None:
    jsonschema.Draft7Validator.check_schema(json.loads((CHART / "values.schema.json").read_text()))
    validate_values(CHART)
    validate_values(CHART, variant(name))


WRONG_TYPES: dict[str, dict[str, Any]] = {
    "/router/replicaCount": {"router": {"replicaCount": "2"}},
    "/engine/strategy/type": {"engine": {"strategy": {"type": 1}}},
}


@pytest.mark.parametrize("path", sorted(WRONG_TYPES))
def test_helm_rejects_a_value_of_the_wrong_type(path: str) -> None:
    """Helm's own validation against values.schema.json, as `helm template`, `helm install` and
    `helm lint` run it."""
    values = (variant("router-values.yaml"), WRONG_TYPES[path])
    with pytest.raises(ValuesRejected, match=f"at '{path}': got (string|number), want"):
        validate_values(CHART, *values)
    with pytest.raises(ValuesRejected, match=f"at '{path}'"):
        render_chart(CHART, *values)
    report = lint_chart(CHART, *values)
    assert any(m["severity"] == 3 and path in m["error"] for m in report["messages"]), report


def test_every_schema_property_is_a_value_and_back() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]) == set(chart_values(CHART)), "values.yaml and its schema differ"


UNSAFE: dict[str, dict[str, Any]] = {
    "RWO with a rolling update": {"adapters": {"persistence": {"accessMode": "ReadWriteOnce"}}},
    "RWO with two engine replicas": {
        "adapters": {"persistence": {"accessMode": "ReadWriteOnce"}},
        "engine": {"strategy": {"type": "Recreate", "rollingUpdate": None}, "replicaCount": 2},
        "retrain": {"enabled": False},
    },
    "RWO with the retrain job": {
        "adapters": {"persistence": {"accessMode": "ReadWriteOnce"}},
        "engine": {"strategy": {"type": "Recreate", "rollingUpdate": None}},
    },
}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_volume_combinations_are_refused_by_schema_and_templates(case: str) -> None:
    values = (variant("default-values.yaml"), UNSAFE[case])
    with pytest.raises(ValuesRejected):
        render_chart(CHART, *values)
    # without the schema (`--skip-schema-validation`) the templates refuse it themselves
    with pytest.raises(RenderFail, match="ReadWriteOnce"):
        render_chart(CHART, *values, schema=False)


def test_without_a_database_the_chart_refuses_to_render() -> None:
    with pytest.raises(RenderFail, match="databaseUrl"):
        render_chart(CHART)


def test_overrides_merge_like_repeated_values_files() -> None:
    """Maps deep-merge, a list replaces, a null deletes the chart's default."""
    values = chart_values(
        CHART,
        variant("default-values.yaml"),
        {"engine": {"strategy": {"rollingUpdate": None}}, "secrets": {"apiKeys": ["other-key-0123456789"]}},
    )
    assert values["engine"]["strategy"] == {"type": "RollingUpdate"}
    assert values["secrets"]["apiKeys"] == ["other-key-0123456789"]
    assert values["secrets"]["databaseUrl"] == variant("default-values.yaml")["secrets"]["databaseUrl"]
    rwo = rendered("rwo-values.yaml")
    deployment = next(m for m in rwo.manifests if m["kind"] == "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}


# --- the engine tier ----------------------------------------------------------------------------------


def test_the_gpu_engine_deployment() -> None:
    deployment = one("default-values.yaml", "Deployment", "-engine")
    spec = pod_spec(deployment)
    (container,) = spec["containers"]
    assert container["image"] == "zantara:0.1.0-gpu-serve"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/readyz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60, "an 8B model loads slowly"
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    claim = one("default-values.yaml", "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["adapters"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert spec["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize("name", VARIANTS)
def test_every_container_environment_is_valid_settings(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    known = {f"ZANTARA_{field.upper()}" for field in Settings.model_fields} | {"ZANTARA_URL"}
    for kind in ("Deployment", "CronJob", "Job"):
        for workload in objects(name, kind):
            for container in pod_spec(workload)["containers"]:
                env = container_env(name, container)
                unknown = {key for key in env if key.startswith("ZANTARA_")} - known - {"ZANTARA_SERVICE_URL"}
                assert not unknown, (
                    f"{name}: {workload['metadata']['name']} sets no setting {sorted(unknown)}"
                )
                settings = settings_from(env, monkeypatch)
                if kind == "Deployment":
                    assert settings.host == "0.0.0.0" and settings.port == 8000


def test_the_configmap_carries_the_canary_guardrail_settings() -> None:
    (config,) = [
        m["data"] for m in objects("default-values.yaml", "ConfigMap") if m["metadata"]["name"] == "zantara"
    ]
    for name in ("INTERVAL_S", "THRESHOLD", "MIN_SAMPLES", "STEP_WEIGHTS", "MAX_WEIGHT"):
        assert f"ZANTARA_CANARY_{name}" in config


# --- the router tier ----------------------------------------------------------------------------------


def test_the_router_tier_fronts_the_engine_service() -> None:
    name = "router-values.yaml"
    router = one(name, "Deployment", "-router")
    assert "replicas" not in router["spec"], "the HPA owns the router's replica count"
    (container,) = pod_spec(router)["containers"]
    assert container["image"] == "zantara:0.1.0-cpu"
    env = container_env(name, container)
    assert env["ZANTARA_ENGINE"] == "openai"
    engine_service = one(name, "Service", "-engine")
    port = engine_service["spec"]["ports"][0]["port"]
    assert env["ZANTARA_UPSTREAM_URLS"] == f"http://{engine_service['metadata']['name']}.llm.svc:{port}/v1"
    assert "nvidia.com/gpu" not in str(container["resources"])
    hpa = one(name, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == router["metadata"]["name"]
    assert not objects(name, "Secret"), "existingSecret: the chart makes no Secret"


@pytest.mark.parametrize("name", VARIANTS)
def test_services_and_budgets_select_their_pods(name: str) -> None:
    pods = {
        w["metadata"]["name"]: w["spec"]["template"]["metadata"]["labels"]
        for w in objects(name, "Deployment")
    }

    def selected(selector: dict[str, str]) -> set[str]:
        return {n for n, labels in pods.items() if selector.items() <= labels.items()}

    for service in objects(name, "Service"):
        assert selected(service["spec"]["selector"]) == {service["metadata"]["name"]}
    for budget in objects(name, "PodDisruptionBudget"):
        assert selected(budget["spec"]["selector"]["matchLabels"]) == {budget["metadata"]["name"]}
    for deployment in objects(name, "Deployment"):
        assert selected(deployment["spec"]["selector"]["matchLabels"]) == {deployment["metadata"]["name"]}


# --- jobs ---------------------------------------------------------------------------------------------


def test_migrations_run_on_the_small_image_before_install_and_upgrade() -> None:
    job = one("default-values.yaml", "Job", "-migrate")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    secret = one("default-values.yaml", "Secret")
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        job["metadata"]["annotations"]["helm.sh/hook-weight"]
    )
    (container,) = pod_spec(job)["containers"]
    assert container["image"] == "zantara:0.1.0-migrate" and container["args"] == ["db", "upgrade"]
    assert set(secret["data"]) == {"admin-token", "user-hash-key", "database-url", "api-keys"}


def test_the_weekly_retrain_cronjob() -> None:
    cron = one("router-values.yaml", "CronJob", "-retrain")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == variant("router-values.yaml")["retrain"]["schedule"]
    spec = pod_spec(cron)
    (container,) = spec["containers"]
    assert container["image"] == "zantara:0.1.0-gpu-train"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = container_env("router-values.yaml", container)
    router_service = one("router-values.yaml", "Service", "-router")["metadata"]["name"]
    assert env["ZANTARA_SERVICE_URL"] == f"http://{router_service}.llm.svc:8000"
    engine = pod_spec(one("router-values.yaml", "Deployment", "-engine"))
    claims = [
        {v["persistentVolumeClaim"]["claimName"] for v in s["volumes"] if v["name"] == "adapters"}
        for s in (spec, engine)
    ]
    assert claims[0] == claims[1] and len(claims[0]) == 1, "retrain writes where the engine loads"
    mounts = [{m["mountPath"] for m in c["volumeMounts"]} for c in (container, engine["containers"][0])]
    assert env["ZANTARA_ADAPTERS_DIR"] in mounts[0] & mounts[1]
    assert not objects("rwo-values.yaml", "CronJob") and not objects("cpu-values.yaml", "CronJob")


@pytest.mark.parametrize(("exit_code", "job_status"), [(0, 0), (1, 0), (3, 0), (2, 2), (137, 137)])
def test_only_a_retrain_error_fails_the_job(exit_code: int, job_status: int, tmp_path: Path) -> None:
    """The CronJob's own command, run by sh with a stand-in `zantara` that exits with `exit_code`."""
    (container,) = pod_spec(one("router-values.yaml", "CronJob", "-retrain"))["containers"]
    fake = tmp_path / "zantara"
    fake.write_text(f'#!/bin/sh\necho "zantara $*" > "{tmp_path}/called"\nexit {exit_code}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    done = subprocess.run(
        container["command"],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == job_status, done.stdout + done.stderr
    assert (tmp_path / "called").read_text().strip() == "zantara retrain --from-scratch"


# --- monitoring ---------------------------------------------------------------------------------------


def test_dashboard_configmap_for_the_grafana_sidecar() -> None:
    config = one("default-values.yaml", "ConfigMap", "-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(config["data"]["zantara.json"])
    assert board == json.loads((CHART / "dashboards" / "zantara.json").read_text())


def test_prometheus_rule_and_service_monitor() -> None:
    rule = one("router-values.yaml", "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "prometheus" / "zantara-rules.yaml").read_text())
    monitor = one("router-values.yaml", "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    expressions = monitor["spec"]["selector"]["matchExpressions"]
    components = next(e["values"] for e in expressions if e["key"] == "app.kubernetes.io/component")
    for service in objects("router-values.yaml", "Service"):
        assert service["metadata"]["labels"]["app.kubernetes.io/component"] in components
    assert not objects("default-values.yaml", "ServiceMonitor")


def test_notes_render_with_real_names() -> None:
    notes = rendered("router-values.yaml").notes
    assert "deployment/zantara-engine" in notes and "service/zantara-router" in notes
    assert "create job --from=cronjob/zantara-retrain" in notes


# --- defects of issue 19: the router tier's settings, secrets, access ----------------------------------


def workloads(name: str) -> list[dict[str, Any]]:
    return [w for kind in ("Deployment", "CronJob", "Job") for w in objects(name, kind)]


def test_the_router_pushes_adapters_with_the_engines_admin_token() -> None:
    (router,) = pod_spec(one("router-values.yaml", "Deployment", "-router"))["containers"]
    (engine,) = pod_spec(one("router-values.yaml", "Deployment", "-engine"))["containers"]
    pushed = next(e for e in router["env"] if e["name"] == "ZANTARA_UPSTREAM_ADMIN_TOKEN")
    checked = next(e for e in engine["env"] if e["name"] == "ZANTARA_ADMIN_TOKEN")
    assert pushed["valueFrom"] == checked["valueFrom"]


def test_behind_the_router_the_engines_limit_no_key_and_hold_what_the_routers_send(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "router-values.yaml"
    (router,) = pod_spec(one(name, "Deployment", "-router"))["containers"]
    (engine,) = pod_spec(one(name, "Deployment", "-engine"))["containers"]
    engine_settings = settings_from(container_env(name, engine), monkeypatch)
    router_settings = settings_from(container_env(name, router), monkeypatch)
    assert engine_settings.max_concurrent_requests_per_key == 0
    assert engine_settings.max_concurrent_requests >= router_settings.max_concurrent_requests
    (alone,) = pod_spec(one("default-values.yaml", "Deployment", "-engine"))["containers"]
    assert settings_from(
        container_env("default-values.yaml", alone), monkeypatch
    ).max_concurrent_requests_per_key


def test_no_pod_carries_a_hash_of_the_secret_values() -> None:
    secrets = {"adminToken": "admin-0123456789abcdef", "userHashKey": "hash-0123456789abcdef"}
    for name in VARIANTS:
        manifests = render_chart(CHART, variant(name), {"secrets": secrets}).manifests
        for workload in [m for m in manifests if m["kind"] in ("Deployment", "CronJob", "Job")]:
            spec = (
                workload["spec"]["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else workload["spec"]
            )
            annotations = spec["template"]["metadata"].get("annotations", {})
            assert not [k for k in annotations if "secret" in k], f"{name}: {workload['metadata']['name']}"
    assert (
        "rollout restart deployment/zantara-engine deployment/zantara-router"
        in rendered("router-values.yaml").notes
    )


def test_production_refuses_an_open_v1_unless_the_values_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    no_keys: dict[str, Any] = {"secrets": {"apiKeys": []}}
    with pytest.raises(RenderFail, match="openAccess: true"):
        render_chart(CHART, variant("default-values.yaml"), no_keys)
    opened = render_chart(CHART, variant("default-values.yaml"), no_keys, {"openAccess": True})
    (container,) = pod_spec(next(m for m in opened.manifests if m["kind"] == "Deployment"))["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ZANTARA_OPEN_ACCESS"]["value"] == "true"
    assert env["ZANTARA_API_KEYS"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # a Secret managed outside the chart must hold api-keys: the pods do not start without it
    for name in ("default-values.yaml", "router-values.yaml"):
        for workload in objects(name, "Deployment"):
            (container,) = pod_spec(workload)["containers"]
            keys = next(e for e in container["env"] if e["name"] == "ZANTARA_API_KEYS")
            assert "optional" not in keys["valueFrom"]["secretKeyRef"]
            settings = settings_from(container_env(name, container), monkeypatch)
            assert settings.environment == "production" and settings.api_keys and not settings.open_access


def test_the_router_key_must_be_one_of_the_api_keys() -> None:
    values = {"router": {"enabled": True}, "secrets": {"upstreamApiKey": "not-a-key"}}
    with pytest.raises(RenderFail, match="upstreamApiKey must be one of them"):
        render_chart(CHART, variant("default-values.yaml"), values)
    key = variant("default-values.yaml")["secrets"]["apiKeys"][0]
    render_chart(CHART, variant("default-values.yaml"), values, {"secrets": {"upstreamApiKey": key}})


@pytest.mark.parametrize("name", VARIANTS)
def test_no_pod_mounts_a_service_account_token(name: str) -> None:
    for workload in workloads(name):
        assert pod_spec(workload)["automountServiceAccountToken"] is False, workload["metadata"]["name"]


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory/storage quantity (`1Gi`, `500M`, `1024`) in bytes."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    for unit, factor in units.items():
        if quantity.endswith(unit):
            return int(float(quantity.removesuffix(unit)) * factor)
    return int(quantity)


@pytest.mark.parametrize("name", VARIANTS)
def test_the_var_volume_is_bounded_above_the_spool_cap(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for workload in [w for w in workloads(name) if w["kind"] != "Job"]:
        spec = pod_spec(workload)
        (var,) = [v for v in spec["volumes"] if v["name"] == "var"]
        for container in spec["containers"]:
            settings = settings_from(container_env(name, container), monkeypatch)
            assert quantity_bytes(str(var["emptyDir"]["sizeLimit"])) > settings.spool_max_bytes


def test_the_chart_sets_trusted_proxies_and_the_guardrails_distinct_users(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (config,) = [
        m["data"] for m in objects("default-values.yaml", "ConfigMap") if m["metadata"]["name"] == "zantara"
    ]
    assert {"ZANTARA_FORWARDED_ALLOW_IPS", "ZANTARA_CANARY_MIN_USERS"} <= set(config)
    (container,) = pod_spec(one("default-values.yaml", "Deployment", "-engine"))["containers"]
    settings = settings_from(container_env("default-values.yaml", container), monkeypatch)
    assert settings.forwarded_allow_ips == config["ZANTARA_FORWARDED_ALLOW_IPS"]
    assert settings.canary_min_users == int(config["ZANTARA_CANARY_MIN_USERS"])


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return bool(selector["matchLabels"].items() <= labels.items())


def test_network_policies_keep_the_engines_behind_the_router_and_admin_in_the_namespace() -> None:
    name = "router-values.yaml"
    labels = {
        tier: one(name, "Deployment", f"-{tier}")["spec"]["template"]["metadata"]["labels"]
        for tier in ("engine", "router")
    }
    policies = {p["metadata"]["name"]: p["spec"] for p in objects(name, "NetworkPolicy")}
    engine, router = policies["zantara-engine"], policies["zantara-router"]
    assert selects(engine["podSelector"], labels["engine"]) and selects(
        router["podSelector"], labels["router"]
    )
    for spec in (engine, router):
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    engine_peers = engine["ingress"][0]["from"]
    (behind,) = [p for p in engine_peers if "namespaceSelector" not in p]
    assert selects(behind["podSelector"], labels["router"]) and not selects(
        behind["podSelector"], labels["engine"]
    )
    prometheus = [p for p in engine_peers if "namespaceSelector" in p]
    assert prometheus == [p for p in router["ingress"][0]["from"] if "namespaceSelector" in p]
    assert prometheus[0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    # the entry tier: this namespace's pods only (a peer without namespaceSelector), unless extraFrom
    assert {"podSelector": {}} in router["ingress"][0]["from"]
    (alone,) = objects("default-values.yaml", "NetworkPolicy")
    assert {"podSelector": {}} in alone["spec"]["ingress"][0]["from"]
    ingress = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    extra = render_chart(CHART, variant("default-values.yaml"), {"networkPolicy": {"extraFrom": [ingress]}})
    (policy,) = [m for m in extra.manifests if m["kind"] == "NetworkPolicy"]
    assert ingress in policy["spec"]["ingress"][0]["from"]
    off = render_chart(CHART, variant("default-values.yaml"), {"networkPolicy": {"enabled": False}})
    assert not [m for m in off.manifests if m["kind"] == "NetworkPolicy"]
