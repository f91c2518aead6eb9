"""deploy/kubernetes checked without a cluster: every object validates against the Kubernetes
API's schemas (kubernetes-validate), the kustomizations build (`kubectl kustomize`, when kubectl
is installed), and what must agree with the gateway does: probes on real routes, real CLI
commands, a policy that loads, has tenants and is mounted so that it reloads, grace periods
that cover the drain, and autoscalers on metrics the gateway and the engine export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from gateway import api
from gateway.policy.load import load_policy
from gateway.telemetry.metrics import Metrics
from local_engine import server as engine_server
from local_engine.metrics import EngineMetrics
from tests.test_deploy import assert_real_cli_command, option

KUBE = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.32.0"
SECRET_KEYS = {"GATEWAY_TENANT_KEY", "GATEWAY_ADMIN_KEY", "GATEWAY_REDIS_URL", "OPENAI_API_KEY"}
"""What the gateway-secrets Secret holds (the README's Kubernetes section creates it)."""
_VAR = re.compile(r"\$\{(\w+)(:-[^}]*)?\}")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(path.read_text()) if d]


def objects(folder: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The objects of a folder's manifests (its kustomization excluded), by kind and name."""
    found = {}
    for path in sorted((KUBE / folder).glob("*.yaml")):
        if path.name != "kustomization.yaml":
            for doc in (d for d in documents(path) if "kind" in d):
                found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


BASE = objects("base")


def container(deployment: str) -> dict[str, Any]:
    (only,) = BASE[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = only
    return found


def pod_labels(deployment: str) -> dict[str, str]:
    labels: dict[str, str] = BASE[("Deployment", deployment)]["spec"]["template"]["metadata"][
        "labels"
    ]
    return labels


def route_paths(handlers: list[Any]) -> set[str]:
    return {path for handler in handlers for path in handler.paths}


def test_every_object_validates_against_the_kubernetes_schemas() -> None:
    for (kind, name), doc in BASE.items():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_the_base_lists_every_manifest_of_its_folder() -> None:
    listed = documents(KUBE / "base" / "kustomization.yaml")[0]["resources"]
    on_disk = {p.name for p in (KUBE / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(listed) == sorted(on_disk)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_the_kustomizations_build() -> None:
    def build(folder: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            ["kubectl", "kustomize", str(KUBE / folder)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return [d for d in YAML(typ="safe").load_all(out) if d]

    base, keda = build("base"), build("keda")
    assert {(d["kind"], d["metadata"]["name"]) for d in base} == set(BASE)
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "llm-gateway" for d in base)
    kinds = [d["kind"] for d in keda]
    assert "HorizontalPodAutoscaler" not in kinds  # KEDA makes its own from the ScaledObjects
    assert kinds.count("ScaledObject") == 2 and kinds.count("Deployment") == 2


def test_commands_are_real_and_the_gateway_is_never_opened() -> None:
    for deployment in ("gateway", "local-engine"):
        spec = container(deployment)
        assert_real_cli_command(deployment, spec["command"])
        (port,) = spec["ports"]
        assert int(option(spec["command"], "--port")) == port["containerPort"]
    assert "--allow-open" not in container("gateway")["command"]


def test_probes_ask_real_routes() -> None:
    gateway, engine = container("gateway"), container("local-engine")
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    engine_routes = route_paths(
        [engine_server.chat_completions, engine_server.list_models, engine_server.healthz]
    )
    for spec, routes in ((gateway, route_paths(api.ROUTES)), (engine, engine_routes)):
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert spec[probe]["httpGet"]["path"] in routes, probe
            assert spec[probe]["httpGet"]["port"] == spec["ports"][0]["name"]


def test_a_stopping_replica_drains_within_its_grace_period() -> None:
    pod = BASE[("Deployment", "gateway")]["spec"]["template"]["spec"]
    spec = container("gateway")
    env = {e["name"]: e.get("value") for e in spec["env"]}
    sleep_s = int(spec["lifecycle"]["preStop"]["exec"]["command"][-1])
    drain_s = int(env["GATEWAY_SHUTDOWN_GRACE_S"])
    assert pod["terminationGracePeriodSeconds"] >= sleep_s + drain_s + 1
    strategy = BASE[("Deployment", "gateway")]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_the_policy_loads_with_tenants_and_is_mounted_to_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = BASE[("ConfigMap", "gateway-policy")]["data"]["policy.yaml"]
    needed = {m.group(1) for m in _VAR.finditer(text) if m.group(2) is None}
    assert needed <= SECRET_KEYS, needed - SECRET_KEYS
    for key in SECRET_KEYS:
        monkeypatch.setenv(key, f"{key.lower()}-0123456789abcdef")
    (tmp_path / "policy.yaml").write_text(text)
    policy = load_policy(tmp_path / "policy.yaml").policy
    assert policy.tenants, "a deployment without tenants would be open to anyone"
    local = policy.models["local-small"].base_url
    service = BASE[("Service", "local-engine")]
    assert local == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/v1"

    spec = container("gateway")
    env = {e["name"]: e.get("value") for e in spec["env"]}
    policy_path = Path(env["GATEWAY_POLICY"])
    (mount,) = [m for m in spec["volumeMounts"] if m["mountPath"] == str(policy_path.parent)]
    assert "subPath" not in mount, "a subPath mount never sees the ConfigMap change"
    volumes = BASE[("Deployment", "gateway")]["spec"]["template"]["spec"]["volumes"]
    (volume,) = [v for v in volumes if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == "gateway-policy"
    assert policy_path.name in BASE[("ConfigMap", "gateway-policy")]["data"]
    (secret,) = spec["envFrom"]
    assert secret["secretRef"] == {"name": "gateway-secrets"}  # required: no start without it


def _exported() -> set[str]:
    gateway = Metrics()
    gateway.watch_load(lambda: 0, lambda: 0)
    engine = EngineMetrics("m")
    return {
        family.name
        for registry in (gateway.registry, engine.registry)
        for family in registry.collect()
    }


def test_autoscalers_use_metrics_that_are_exported() -> None:
    exported = _exported()
    adapter = documents(KUBE / "monitoring" / "prometheus-adapter-values.yaml")[0]
    served = {
        re.match(r"(\w+)\{", rule["seriesQuery"]).group(1)  # type: ignore[union-attr]
        for rule in adapter["rules"]["custom"]
    }
    scaled = set()
    for (kind, _), doc in BASE.items():
        if kind != "HorizontalPodAutoscaler":
            continue
        assert ("Deployment", doc["spec"]["scaleTargetRef"]["name"]) in BASE
        for metric in doc["spec"]["metrics"]:
            if metric["type"] == "Pods":
                scaled.add(metric["pods"]["metric"]["name"])
    assert scaled == {"gateway_requests_in_flight", "local_engine_queue_depth"}
    assert scaled <= exported and scaled <= served
    for doc in objects("keda").values():
        assert ("Deployment", doc["spec"]["scaleTargetRef"]["name"]) in BASE
        for trigger in doc["spec"]["triggers"]:
            if trigger["type"] == "prometheus":
                (name,) = re.findall(r"\b(\w+)\{", trigger["metadata"]["query"])
                assert name in scaled


def test_prometheus_scrapes_the_gateway_with_the_admin_key() -> None:
    monitors = objects("monitoring")
    gateway = monitors[("ServiceMonitor", "gateway")]
    (endpoint,) = gateway["spec"]["endpoints"]
    assert endpoint["authorization"]["credentials"] == {
        "name": "gateway-secrets",
        "key": "GATEWAY_ADMIN_KEY",
    }
    for name in ("gateway", "local-engine"):
        service = BASE[("Service", name)]
        monitor = monitors[("ServiceMonitor", name)]
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        ports = {p["name"] for p in service["spec"]["ports"]}
        assert all(e["port"] in ports for e in monitor["spec"]["endpoints"])


def test_the_engine_gets_a_gpu_and_only_the_gateway_reaches_it() -> None:
    resources = container("local-engine")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    policy = BASE[("NetworkPolicy", "local-engine")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels("local-engine").items()
    sources = [s for rule in policy["ingress"] for s in rule["from"] if "podSelector" in s]
    assert [s["podSelector"]["matchLabels"] for s in sources] == [
        {"app.kubernetes.io/name": "gateway"}
    ]
    assert sources[0]["podSelector"]["matchLabels"].items() <= pod_labels("gateway").items()


def test_budgets_and_services_select_their_pods() -> None:
    for (kind, name), doc in BASE.items():
        if kind in ("PodDisruptionBudget", "Service"):
            selector = doc["spec"]["selector"]
            labels = selector.get("matchLabels", selector)
            assert labels.items() <= pod_labels(name).items(), f"{kind}/{name}"
