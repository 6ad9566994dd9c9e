"""deploy/kubernetes cannot be applied here (no cluster): check that the manifests are
well-formed, run commands that exist, read only known settings, and that the
autoscaler watches the stream, consumer and account of libs/contracts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml
from pydantic_settings import BaseSettings

from contracts import consumers, topology
from gateway.settings import GatewaySettings
from inference.settings import InferenceSettings
from memory.settings import MemorySettings
from usage.settings import UsageSettings

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
SERVICES = {
    "gateway": GatewaySettings,
    "inference": InferenceSettings,
    "memory": MemorySettings,
    "usage": UsageSettings,
}


def _documents() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    documents = []
    for resource in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((KUBERNETES / resource).read_text()) if d]
    return documents


def _of(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _documents() if d["kind"] == kind}


def _setting_names(settings: type[BaseSettings]) -> set[str]:
    names = set()
    for name, info in settings.model_fields.items():
        alias = info.validation_alias
        names.add(alias if isinstance(alias, str) else f"LIVECHAT_{name.upper()}")
    return names


def test_every_file_of_the_directory_is_applied() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    files = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


def test_each_service_is_a_deployment_running_its_module_with_known_settings() -> None:
    deployments = _of("Deployment")
    config = _of("ConfigMap")["livechat-config"]["data"]
    assert set(deployments) == set(SERVICES)
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert (
            spec["selector"]["matchLabels"].items()
            <= spec["template"]["metadata"]["labels"].items()
        )
        [container] = spec["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", name]
        probes = [container[p] for p in ("readinessProbe", "livenessProbe")]
        for command in [container["command"]] + [
            p["exec"]["command"] for p in probes if "exec" in p
        ]:
            module = command[command.index("-m") + 1]
            assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"
        known = _setting_names(SERVICES[name])
        given = {e["name"] for e in container["env"] if e["name"].startswith("LIVECHAT_")}
        assert given <= known, f"{name}: unknown settings {given - known}"
        secrets = [e for e in container["env"] if "valueFrom" in e]
        assert all(e["valueFrom"]["secretKeyRef"]["name"] == "livechat-secrets" for e in secrets)
    # The shared settings are each read by some service.
    anyone = set().union(*(_setting_names(settings) for settings in SERVICES.values()))
    assert set(config) <= anyone, set(config) - anyone
    # Every node of the cluster, every stream on three of them.
    assert len(config["LIVECHAT_NATS_URL"].split(",")) == 3
    assert config["LIVECHAT_NATS_REPLICAS"] == "3"


def test_inference_scales_on_the_pending_requests_of_the_work_consumer() -> None:
    scaled = _of("ScaledObject")["inference"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "inference"
    assert scaled["minReplicaCount"] >= 2
    [trigger] = scaled["triggers"]
    assert trigger["type"] == "nats-jetstream"
    metadata = trigger["metadata"]
    assert metadata["stream"] == topology.WORK_STREAM == consumers.INFERENCE.stream
    assert metadata["consumer"] == topology.INFERENCE_CONSUMER == consumers.INFERENCE.durable
    assert metadata["account"] == consumers.ACCOUNT
    assert int(metadata["lagThreshold"]) > 0


def test_the_gateway_scales_on_cpu_behind_a_service() -> None:
    hpa = _of("HorizontalPodAutoscaler")["gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    service = _of("Service")["gateway"]["spec"]
    assert service["selector"] == {"app.kubernetes.io/name": "gateway"}
    [container] = _of("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"]  # utilisation needs a request
    ports = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["ports"]} <= ports
