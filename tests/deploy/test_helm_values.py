"""deploy/helm/milvus-values.yaml: Milvus 2.6 in cluster mode with replicated query nodes and
authentication on, the same Milvus release as docker-compose.yml."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.files import COMPOSE, DEPLOY

VALUES = DEPLOY / "helm" / "milvus-values.yaml"


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(VALUES.read_text())
    return data


@pytest.fixture(scope="module")
def milvus_config(values: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(values["extraConfigFiles"]["user.yaml"])
    return data


def test_cluster_mode_on_the_2_6_architecture(values: dict[str, Any]) -> None:
    assert values["cluster"]["enabled"] is True
    assert values["streaming"]["enabled"] is True
    assert values["woodpecker"]["enabled"] is True
    assert values["pulsarv3"]["enabled"] is False
    assert values["indexNode"]["enabled"] is False


def test_same_milvus_release_as_compose(values: dict[str, Any]) -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    image = values["image"]["all"]
    assert f"{image['repository']}:{image['tag']}" == compose["services"]["milvus"]["image"]


def test_query_nodes_are_replicated(values: dict[str, Any], milvus_config: dict[str, Any]) -> None:
    replicas = milvus_config["queryCoord"]["clusterLevelLoadReplicaNumber"]
    assert replicas >= 2
    assert values["queryNode"]["replicas"] >= replicas
    assert values["proxy"]["replicas"] >= 2
    for component in ("proxy", "mixCoordinator", "queryNode", "dataNode", "streamingNode"):
        resources = values[component]["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), component


def test_authentication_is_on(values: dict[str, Any], milvus_config: dict[str, Any]) -> None:
    assert milvus_config["common"]["security"]["authorizationEnabled"] is True
    root = {e["name"]: e for e in values["mixCoordinator"]["extraEnv"]}
    assert "secretKeyRef" in root["COMMON_SECURITY_DEFAULTROOTPASSWORD"]["valueFrom"]
    assert "accessKey" not in values["minio"], "MinIO credentials belong in --set, not here"
