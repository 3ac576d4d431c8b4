"""A real Milvus server with authentication for the access-control tests: the one named by
LOOKALIKE_TEST_MILVUS_URI (administrator token in LOOKALIKE_TEST_MILVUS_TOKEN, default
root:Milvus), else a Milvus standalone container started with testcontainers where Docker runs,
else the tests are skipped with the reason. Milvus Lite has no authentication, so it cannot
stand in. (LOOKALIKE_TEST_* variables are not settings: lookalike ignores them.)"""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.deploy.files import COMPOSE

DEFAULT_ADMIN_TOKEN = "root:Milvus"


@dataclass(frozen=True)
class SecuredMilvus:
    uri: str
    admin_token: str


def _docker_problem() -> str | None:
    """Why no container can be started here; None when Docker answers."""
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return "no DOCKER_HOST and no /var/run/docker.sock"
    try:
        import docker
    except ImportError:
        return "the docker package is not installed"
    try:
        client = docker.from_env()
    except Exception as exc:
        return f"Docker is not reachable: {type(exc).__name__}: {exc}"
    try:
        client.ping()
    except Exception as exc:
        return f"Docker is not reachable: {type(exc).__name__}: {exc}"
    finally:
        client.close()
    return None


def _milvus_image() -> str:
    image: str = yaml.safe_load(COMPOSE.read_text())["services"]["milvus"]["image"]
    return image


def _wait_healthy(url: str, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"Milvus did not become healthy at {url} in {timeout:.0f} s")
        time.sleep(2)


@pytest.fixture(scope="session")
def secured_milvus() -> Iterator[SecuredMilvus]:
    uri = os.environ.get("LOOKALIKE_TEST_MILVUS_URI")
    if uri:
        yield SecuredMilvus(uri, os.environ.get("LOOKALIKE_TEST_MILVUS_TOKEN", DEFAULT_ADMIN_TOKEN))
        return
    problem = _docker_problem()
    if problem:
        pytest.skip(
            "no Milvus server with authentication: set LOOKALIKE_TEST_MILVUS_URI (and "
            f"LOOKALIKE_TEST_MILVUS_TOKEN) or run Docker ({problem}); Milvus Lite has no "
            "authentication"
        )
    from testcontainers.core.container import DockerContainer

    container = (
        DockerContainer(_milvus_image())
        .with_command("milvus run standalone")
        .with_env("ETCD_USE_EMBED", "true")
        .with_env("ETCD_DATA_DIR", "/var/lib/milvus/etcd")
        .with_env("COMMON_STORAGETYPE", "local")
        .with_env("DEPLOY_MODE", "STANDALONE")
        .with_env("COMMON_SECURITY_AUTHORIZATIONENABLED", "true")
        .with_exposed_ports(19530, 9091)
        .with_kwargs(security_opt=["seccomp:unconfined"])
    )
    container.start()
    try:
        host = container.get_container_host_ip()
        _wait_healthy(f"http://{host}:{container.get_exposed_port(9091)}/healthz")
        yield SecuredMilvus(
            f"http://{host}:{container.get_exposed_port(19530)}", DEFAULT_ADMIN_TOKEN
        )
    finally:
        container.stop()
