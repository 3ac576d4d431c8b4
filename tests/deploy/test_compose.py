"""docker-compose.yml: valid against the Compose Specification schema (vendored), and the
promises it makes: healthchecks behind every dependency, pinned images, Redis durability,
scalable workers, secrets only from .env, settings lookalike accepts."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from services.settings import ENV_PREFIX, Settings
from tests.deploy.files import (
    COMPOSE,
    ENV_EXAMPLE,
    compose_errors,
    compose_variables,
    env_file,
    interpolate,
)

OWN_IMAGES = {"lookalike", "lookalike-cuda"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


@pytest.mark.parametrize(
    ("label", "breakage"),
    [
        ("unknown service key", lambda c: c["services"]["worker"].update(dependson=["redis"])),
        ("wrong type", lambda c: c["services"]["redis"].update(volumes="redis:/data")),
        (
            "bad condition",
            lambda c: c["services"]["worker"]["depends_on"]["redis"].update(
                condition="service_ready"
            ),
        ),
        ("unknown top-level key", lambda c: c.update(service={})),
    ],
)
def test_a_broken_compose_file_is_rejected(
    compose: dict[str, Any], label: str, breakage: Any
) -> None:
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert compose_errors(broken), f"{label} was not caught"


def test_dependencies_wait_for_health(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no healthcheck"
            else:
                assert condition == "service_completed_successfully", (name, target, condition)
                assert services[target].get("restart") == "no", f"{target} is not one-shot"


def test_long_running_services_have_healthchecks(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if service.get("restart") != "no":
            test = service.get("healthcheck", {}).get("test")
            assert test, f"{name} has no healthcheck"


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
        if repository in OWN_IMAGES:
            assert service["build"]["dockerfile"].startswith("deploy/Dockerfile"), name


def test_milvus_is_standalone_2_6_with_authentication(services: dict[str, dict[str, Any]]) -> None:
    milvus = services["milvus"]
    assert re.fullmatch(r"milvusdb/milvus:v2\.6\.\d+", milvus["image"])
    assert milvus["command"] == ["milvus", "run", "standalone"]
    env = milvus["environment"]
    assert env["COMMON_SECURITY_AUTHORIZATIONENABLED"] == "true"
    assert "MILVUS_ROOT_PASSWORD" in env["COMMON_SECURITY_DEFAULTROOTPASSWORD"]
    assert {"etcd", "minio"} <= set(milvus["depends_on"])


def test_redis_keeps_the_queue(services: dict[str, dict[str, Any]]) -> None:
    redis = services["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+(-alpine)?", redis["image"])
    args = redis["command"]
    options = dict(zip(args[1::2], args[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "always"
    assert options["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_workers_can_be_scaled(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker", "worker-gpu"):
        worker = services[name]
        assert "container_name" not in worker, f"{name}: a fixed name breaks --scale"
        assert "ports" not in worker, f"{name}: a published port breaks --scale"
        assert worker["command"][0] == "worker"


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith(("$", ".", "/")):
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_every_variable_is_in_env_example_and_nothing_else() -> None:
    used = compose_variables(COMPOSE.read_text())
    example = env_file(ENV_EXAMPLE)
    assert used == set(example), (
        f"missing from .env.example: {sorted(used - set(example))}; "
        f"unused in docker-compose.yml: {sorted(set(example) - used)}"
    )


def test_env_example_holds_no_secrets_and_no_settings() -> None:
    for key, value in env_file(ENV_EXAMPLE).items():
        assert not key.startswith(ENV_PREFIX), f"{key}: lookalike would refuse it as a setting"
        if "PASSWORD" in key:
            assert value == "change-me", f"{key} has a value in .env.example"
    assert ".env" in (COMPOSE.parent / ".gitignore").read_text().splitlines()


def test_services_get_settings_lookalike_accepts(services: dict[str, dict[str, Any]]) -> None:
    dotenv = {k: v.replace("change-me", "Secret123") for k, v in env_file(ENV_EXAMPLE).items()}
    for name, service in services.items():
        if service["image"].rpartition(":")[0] not in OWN_IMAGES:
            continue
        environ = {k: interpolate(str(v), dotenv) for k, v in service["environment"].items()}
        settings = Settings.from_env(environ)
        assert settings.milvus_uri == "http://milvus:19530", name
        assert settings.milvus_secret is not None, f"{name} logs in to Milvus without a user"
        if service["command"] == ["ui"]:
            assert settings.ui_address == "0.0.0.0" and settings.ui_password is not None


def test_interpolation_refuses_missing_secrets() -> None:
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate("redis://:${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}@redis", {})
    assert interpolate("${A:-x}-$${B}", {}) == "x-${B}"
