"""Every Kubernetes manifest under deploy/k8s: valid against the Kubernetes schemas (shipped by
kubernetes-validate) and the vendored KEDA schemas, for the oldest and the newest Kubernetes we
support; and what the manifests promise: requests and probes on every container, non-root pods,
pinned images, one Secret described in deploy/README.md, autoscaling on lookalike's queue."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from services.queue import QUEUE
from services.settings import Settings
from tests.deploy.files import (
    DEPLOY,
    K8S,
    OLDEST_KUBERNETES,
    WORKLOADS,
    containers,
    kubernetes_documents,
    kubernetes_files,
    newest_kubernetes,
    pod_spec,
    validate_kubernetes,
)

DOCUMENTS = list(kubernetes_documents())
IDS = [
    f"{path.relative_to(K8S)}:{doc['kind']}/{doc['metadata']['name']}" for path, doc in DOCUMENTS
]


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] in kinds]


@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, newest_kubernetes()])
@pytest.mark.parametrize(("path", "doc"), DOCUMENTS, ids=IDS)
def test_manifest_is_valid(path: Path, doc: dict[str, Any], version: str) -> None:
    validate_kubernetes(doc, version)


def broken_documents() -> list[tuple[str, dict[str, Any]]]:
    worker = next(
        doc for doc in of_kind("Deployment") if doc["metadata"]["name"] == "lookalike-worker"
    )
    scaled = of_kind("ScaledObject")[0]
    redis = of_kind("StatefulSet")[0]
    cases = []
    misspelt = copy.deepcopy(worker)
    misspelt["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    cases.append(("misspelt container field", misspelt))
    wrong_type = copy.deepcopy(redis)
    wrong_type["spec"]["replicas"] = "one"
    cases.append(("replicas as text", wrong_type))
    no_target = copy.deepcopy(scaled)
    no_target["spec"]["scaleTargetRefs"] = no_target["spec"].pop("scaleTargetRef")
    cases.append(("ScaledObject without scaleTargetRef", no_target))
    bad_trigger = copy.deepcopy(scaled)
    bad_trigger["spec"]["triggers"][0]["metadata"]["listLength"] = 4
    cases.append(("trigger metadata not a string", bad_trigger))
    return cases


@pytest.mark.parametrize(
    ("label", "doc"), broken_documents(), ids=lambda x: x if isinstance(x, str) else ""
)
def test_a_broken_manifest_is_rejected(label: str, doc: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate_kubernetes(doc, OLDEST_KUBERNETES)


def test_an_unknown_kind_is_not_waved_through() -> None:
    import kubernetes_validate

    with pytest.raises((LookupError, kubernetes_validate.SchemaNotFoundError)):
        validate_kubernetes({"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledJobs"}, "1.30.0")
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_kubernetes({"apiVersion": "apps/v1", "kind": "Deploymnet"}, "1.30.0")


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = {K8S / name for name in kustomization["resources"]}
    assert all(path.exists() for path in listed), sorted(map(str, listed))
    top_level = {p for p in kubernetes_files() if p.parent == K8S}
    assert listed == top_level
    assert kustomization["namespace"] == "lookalike"


@pytest.mark.parametrize("doc", of_kind(*WORKLOADS), ids=lambda d: d["metadata"]["name"])
def test_containers_request_resources_and_run_unprivileged(doc: dict[str, Any]) -> None:
    pod = pod_spec(doc)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    for container in containers(doc):
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), container["name"]
        assert "memory" in resources["limits"], container["name"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        image = container["image"]
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), image


@pytest.mark.parametrize(
    "doc", of_kind("Deployment", "StatefulSet"), ids=lambda d: d["metadata"]["name"]
)
def test_long_running_containers_have_probes(doc: dict[str, Any]) -> None:
    for container in containers(doc):
        assert "livenessProbe" in container, container["name"]
        if container.get("ports"):
            assert "readinessProbe" in container, f"{container['name']} serves without readiness"


def test_workers_scale_on_the_celery_queue() -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    authentications = {d["metadata"]["name"] for d in of_kind("TriggerAuthentication")}
    scaled_objects = of_kind("ScaledObject")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled_objects} >= {"lookalike-worker"}
    for scaled in scaled_objects:
        target = deployments[scaled["spec"]["scaleTargetRef"]["name"]]
        assert target["spec"]["template"]["spec"]["containers"][0]["args"][0] == "worker"
        assert scaled["spec"]["maxReplicaCount"] > scaled["spec"]["minReplicaCount"] >= 0
        for trigger in scaled["spec"]["triggers"]:
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["listName"] == QUEUE
            assert trigger["metadata"]["address"].startswith("redis.")
            assert trigger["authenticationRef"]["name"] in authentications
        # Scaling down must let a worker finish the batches in hand.
        assert target["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 60


def test_redis_is_durable_and_never_evicts() -> None:
    config = next(d for d in of_kind("ConfigMap") if d["metadata"]["name"] == "redis-config")
    lines = {
        line.split(None, 1)[0]: line.split(None, 1)[1]
        for line in config["data"]["redis.conf"].splitlines()
        if line.strip()
    }
    assert lines["appendonly"] == "yes"
    assert lines["appendfsync"] == "always"
    assert lines["maxmemory-policy"] == "noeviction"
    redis = of_kind("StatefulSet")[0]
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-alpine)?", containers(redis)[0]["image"])


def _secret_keys_in_readme() -> set[str]:
    readme = (DEPLOY / "README.md").read_text()
    command = re.search(
        r"kubectl .*create secret generic lookalike-secrets(.*?)\n\s*```", readme, re.S
    )
    assert command, "deploy/README.md does not show how to create the Secret lookalike-secrets"
    return set(re.findall(r"--from-literal=([\w-]+)=", command.group(1)))


def _env_sources(doc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(e["name"], e) for c in containers(doc) for e in c.get("env", [])]


def test_every_secret_key_used_is_created_in_the_readme() -> None:
    created = _secret_keys_in_readme()
    used = set()
    for _, doc in DOCUMENTS:
        for _, entry in _env_sources(doc):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "lookalike-secrets"
                used.add(ref["key"])
        for ref in doc.get("spec", {}).get("secretTargetRef", []):
            used.add(ref["key"])
    assert used == created


def test_pods_get_settings_lookalike_accepts() -> None:
    config = next(d for d in of_kind("ConfigMap") if d["metadata"]["name"] == "lookalike-config")
    for doc in of_kind(*WORKLOADS):
        for container in containers(doc):
            if not container["image"].startswith("lookalike"):
                continue
            environ: dict[str, str] = {}
            if any(s.get("configMapRef") for s in container.get("envFrom", [])):
                environ.update(config["data"])
            for entry in container.get("env", []):
                if "value" in entry:
                    value = re.sub(r"\$\((\w+)\)", "Secret123", entry["value"])
                elif "configMapKeyRef" in entry.get("valueFrom", {}):
                    value = config["data"][entry["valueFrom"]["configMapKeyRef"]["key"]]
                else:
                    value = "Secret123"
                environ[entry["name"]] = value
            settings = Settings.from_env(environ)
            assert settings.milvus_uri and settings.milvus_secret, doc["metadata"]["name"]
            if container["args"] == ["ui"]:
                assert settings.ui_address == "0.0.0.0" and settings.ui_password is not None
                port = container["ports"][0]["containerPort"]
                assert settings.ui_port == port
                assert container["readinessProbe"]["httpGet"]["path"] == "/_stcore/health"


S3_COMPONENT = K8S / "components" / "s3-photos"


def test_the_s3_component_targets_what_the_base_has() -> None:
    """Its patches name Deployments, containers and the photos volume that exist in the base."""
    component = yaml.safe_load((S3_COMPONENT / "kustomization.yaml").read_text())
    assert component["kind"] == "Component"
    deployments = {d["metadata"]["name"]: d for d in of_kind("Deployment")}
    for entry in component["patches"]:
        base = deployments[entry["target"]["name"]]
        patch = yaml.safe_load(entry["patch"])
        [patched] = patch["spec"]["template"]["spec"]["containers"]
        [container] = [c for c in containers(base) if c["name"] == patched["name"]]
        assert {"mountPath": "/photos", "$patch": "delete"} in patched["volumeMounts"]
        assert "/photos" in {m["mountPath"] for m in container["volumeMounts"]}
        assert "photos" in {v["name"] for v in pod_spec(base)["volumes"]}


def test_an_overlay_with_the_s3_component_renders_without_the_photos_claim(
    tmp_path: Path,
) -> None:
    import os
    import shutil
    import subprocess

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its kustomize renders the overlay)")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base, component = (os.path.relpath(p, overlay) for p in (K8S, S3_COMPONENT))
    (overlay / "kustomization.yaml").write_text(f"resources: [{base}]\ncomponents: [{component}]\n")
    result = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    rendered = result.stdout
    assert "lookalike-photos" not in rendered
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    for doc in docs:
        validate_kubernetes(doc, OLDEST_KUBERNETES)
    for name in ("lookalike-worker", "lookalike-ui"):
        [deployment] = [
            d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name
        ]
        [container] = containers(deployment)
        env = {e["name"] for e in container["env"]}
        assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env
        assert "/photos" not in {m["mountPath"] for m in container["volumeMounts"]}
