"""Reading and validating the deployment files, offline: YAML documents, Compose interpolation,
the vendored schemas and the Kubernetes schemas shipped by ``kubernetes-validate``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"
K8S = DEPLOY / "k8s"
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"

# The oldest Kubernetes the manifests promise to run on, and the newest whose schemas we have.
OLDEST_KUBERNETES = "1.29.0"

Document = dict[str, Any]


def yaml_documents(path: Path) -> list[Document]:
    """Every non-empty YAML document in ``path``."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def kubernetes_files() -> list[Path]:
    """Every manifest under deploy/k8s (kustomization.yaml is kustomize's, not the API's)."""
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def kubernetes_documents() -> Iterator[tuple[Path, Document]]:
    for path in kubernetes_files():
        for doc in yaml_documents(path):
            yield path, doc


@cache
def _schema(name: str) -> Document:
    data: Document = json.loads((SCHEMAS / name).read_text())
    return data


def compose_errors(data: Mapping[str, Any]) -> list[str]:
    """Where ``data`` breaks the Compose Specification schema; empty when it validates."""
    validator = jsonschema.Draft7Validator(_schema("compose-spec.json"))
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)
    ]


def validate_kubernetes(doc: Mapping[str, Any], version: str) -> None:
    """Raise a jsonschema.ValidationError (or SchemaNotFoundError) unless ``doc`` is valid.

    KEDA kinds are checked against the vendored schemas, every other kind against the
    Kubernetes ``version`` schemas in strict mode (unknown fields are errors, as with kubectl).
    """
    import kubernetes_validate

    api_version = str(doc.get("apiVersion", ""))
    if api_version.startswith("keda.sh/"):
        group_version = api_version.replace("/", "-").replace(".sh", "")
        name = f"keda/{str(doc.get('kind', '')).lower()}-{group_version}.json"
        if not (SCHEMAS / name).exists():
            raise LookupError(f"no vendored schema {name} for {doc.get('kind')} {api_version}")
        jsonschema.Draft7Validator(_schema(name)).validate(dict(doc))
        return
    kubernetes_validate.validate(dict(doc), version, strict=True)


def newest_kubernetes() -> str:
    import kubernetes_validate.utils

    return str(kubernetes_validate.utils.latest_version())


_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def compose_variables(text: str) -> set[str]:
    """Names of the ``${VAR}`` interpolations in a Compose file (``$$`` is a literal ``$``)."""
    return {m.group(1) for m in _VARIABLE.finditer(text.replace("$$", ""))}


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's interpolation of one string: ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}``."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = env.get(name, "")
        if op in (":-", "-") and not current:
            return arg
        if op in (":?", "?") and not current:
            raise KeyError(f"{name} is required: {arg}")
        return current

    return _VARIABLE.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file, comments and blank lines skipped."""
    pairs = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def containers(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The containers of a workload (Deployment, StatefulSet, Job), init containers included."""
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def pod_spec(doc: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec


WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
