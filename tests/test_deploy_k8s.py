"""deploy/k8s (kustomize), rendered and validated offline, and compared with the code: the
topic registry and its partitions, the process list, the settings, who may write what."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.outboxes import OUTBOX_TABLES
from services.stack import PROCESSES
from shared.settings import Settings
from shared.topics import ALL_TOPICS

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
KUBERNETES_VERSION = "1.34"
OPERATOR_KINDS = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster",
                  "ScaledObject", "TriggerAuthentication", "PodMonitor"}


def _render() -> list[dict[str, Any]]:
    """`kubectl kustomize` where it is installed; otherwise the listed resources as they are
    (no patches: enough for every check below but the patched CA volume)."""
    if shutil.which("kubectl"):
        out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True,
                             text=True, timeout=60, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return _render()


def _of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _settings(objects: list[dict[str, Any]]) -> Settings:
    env = _of(objects, "ConfigMap")["lookout-config"]["data"]
    fields = {k.removeprefix("LOOKOUT_").lower(): v for k, v in env.items()}
    return Settings.model_validate({k: v for k, v in fields.items()
                                    if k in Settings.model_fields and k != "env"})


def test_every_kubernetes_object_validates_against_its_schema(
    objects: list[dict[str, Any]]
) -> None:
    core = [o for o in objects if o["kind"] not in OPERATOR_KINDS]
    assert len(core) >= 30
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    for obj in objects:  # the operators' objects: at least well formed
        if obj["kind"] in OPERATOR_KINDS:
            assert obj["apiVersion"].count("/") == 1 and obj["metadata"]["name"], obj
            assert obj.get("spec"), obj["metadata"]["name"]


def test_topics_and_partitions_match_the_registry(objects: list[dict[str, Any]]) -> None:
    settings = _settings(objects)
    assert settings.kafka_partitions == 12  # the deployment's own setting is what is checked
    topics = {t["spec"]["topicName"]: t["spec"] for t in _of(objects, "KafkaTopic").values()}
    wanted = {}
    for topic in ALL_TOPICS:
        count = settings.kafka_topic_partitions.get(topic.name, settings.kafka_partitions)
        wanted[topic.name] = wanted[topic.dlq] = count
    assert {name: spec["partitions"] for name, spec in topics.items()} == wanted
    assert all(spec["replicas"] == 3 for spec in topics.values())


def test_each_service_writes_only_its_own_topics(objects: list[dict[str, Any]]) -> None:
    registry = {t.name for t in ALL_TOPICS} | {t.dlq for t in ALL_TOPICS}
    writers: dict[str, set[str]] = {}
    for name, user in _of(objects, "KafkaUser").items():
        assert user["spec"]["authentication"]["type"] == "scram-sha-512"
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            if resource["type"] != "topic":
                continue
            if resource["patternType"] == "prefix":  # a Faust app's or a relay's own topics
                assert resource["name"] in (f"lookout-{name}-", f"relay.{name}_outbox."), (
                    name, resource)
                continue
            if {"Write", "All"} & set(acl["operations"]):
                assert resource["name"] in registry, (name, resource)
                writers.setdefault(resource["name"], set()).add(name)
    assert writers["signals.v1"] == {"detection"}  # no forged signal from anyone else
    assert writers["sms.outbound.v1"] == {"alerts"}
    assert writers["drugcheck.results.v1"] == {"ingest"}
    assert {t.name for t in ALL_TOPICS} <= set(writers)


def test_a_deployment_per_process_with_probes_resources_and_budgets(
    objects: list[dict[str, Any]]
) -> None:
    deployments = _of(objects, "Deployment")
    expected = {name: args for name, args in PROCESSES.items() if name != "relay"}
    expected |= {f"relay-{service}": ["relay", service] for service in OUTBOX_TABLES}
    assert {n: d["spec"]["template"]["spec"]["containers"][0]["args"]
            for n, d in deployments.items()} == expected
    budgets = {p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
               for p in _of(objects, "PodDisruptionBudget").values()}
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"] and container["livenessProbe"], name
        assert container["resources"]["requests"], name
        if deployment["spec"]["replicas"] > 1:
            assert name in budgets, name


def test_settings_and_secrets_by_reference(objects: list[dict[str, Any]]) -> None:
    names = set(_of(objects, "ConfigMap")["lookout-config"]["data"])
    for deployment in _of(objects, "Deployment").values():
        for var in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
            names.add(var["name"])
            if any(word in var["name"] for word in ("SECRET", "TOKEN", "PASSWORD", "URL")):
                if var["name"] not in ("LOOKOUT_PUBLIC_ALERTS_URL",):
                    assert "valueFrom" in var and "value" not in var, var
    for name in names:
        assert name.startswith("LOOKOUT_")
        assert name.removeprefix("LOOKOUT_").lower() in Settings.model_fields, name
    assert not _of(objects, "Secret")  # secrets are made by the operator, not shipped


def test_workers_scale_on_lag_no_further_than_their_partitions(
    objects: list[dict[str, Any]]
) -> None:
    settings = _settings(objects)
    scaled = _of(objects, "ScaledObject")
    # Detection's workers share the partitions too (docs/detection.md, "N workers").
    assert {"detection", "alerts-worker", "referrals-worker"} <= set(scaled)
    assert _of(objects, "Deployment")["detection"]["spec"]["replicas"] >= 2
    assert scaled["detection"]["spec"]["triggers"][0]["metadata"]["consumerGroup"] == (
        "lookout-detection")
    for name, obj in scaled.items():
        topic = obj["spec"]["triggers"][0]["metadata"]["topic"]
        partitions = settings.kafka_topic_partitions.get(topic, settings.kafka_partitions)
        assert obj["spec"]["maxReplicaCount"] <= partitions, name
        assert obj["spec"]["scaleTargetRef"]["name"] in _of(objects, "Deployment")


def test_network_policies_deny_by_default(objects: list[dict[str, Any]]) -> None:
    policies = _of(objects, "NetworkPolicy")
    deny = policies["default-deny-ingress"]["spec"]
    assert deny["podSelector"] == {} and deny["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny
