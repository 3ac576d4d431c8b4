"""`lookalike milvus`: still serves with no subcommand, and `init-roles` refuses what cannot work
before it talks to any server."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.app import app

SERVER = {"LOOKALIKE_MILVUS_URI": "http://127.0.0.1:9", "LOOKALIKE_MILVUS_TOKEN": "root:Milvus"}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "LOOKALIKE_MILVUS_URI",
        "LOOKALIKE_MILVUS_TOKEN",
        "MILVUS_WRITER_PASSWORD",
        "MILVUS_READER_PASSWORD",
    ):
        monkeypatch.delenv(name, raising=False)


def test_milvus_is_a_group_that_still_serves_by_default() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["milvus", "--help"])
    assert listed.exit_code == 0 and "init-roles" in listed.output
    # No subcommand: the callback runs the embedded server, which a configured server forbids.
    served = runner.invoke(app, ["milvus"], env={"LOOKALIKE_MILVUS_URI": "http://milvus:19530"})
    assert served.exit_code == 1
    assert "nothing to start" in served.output


def test_init_roles_needs_a_server_not_milvus_lite() -> None:
    result = CliRunner().invoke(app, ["milvus", "init-roles"])
    assert result.exit_code == 2
    assert "LOOKALIKE_MILVUS_URI" in result.output and "no authentication" in result.output


def test_init_roles_needs_an_administrator() -> None:
    env = {"LOOKALIKE_MILVUS_URI": SERVER["LOOKALIKE_MILVUS_URI"]}
    result = CliRunner().invoke(app, ["milvus", "init-roles"], env=env)
    assert result.exit_code == 2
    assert "LOOKALIKE_MILVUS_TOKEN" in result.output


def test_init_roles_takes_passwords_from_the_environment_only() -> None:
    result = CliRunner().invoke(app, ["milvus", "init-roles"], env=SERVER)
    assert result.exit_code == 2
    assert "MILVUS_WRITER_PASSWORD" in result.output
    flag = CliRunner().invoke(app, ["milvus", "init-roles", "--writer-password", "x"], env=SERVER)
    assert flag.exit_code == 2 and "No such option" in flag.output


def test_init_roles_refuses_bad_names_before_connecting() -> None:
    env = {**SERVER, "MILVUS_WRITER_PASSWORD": "writer-pass", "MILVUS_READER_PASSWORD": "abc"}
    same = CliRunner().invoke(
        app, ["milvus", "init-roles", "--writer-user", "u", "--reader-user", "u"], env=env
    )
    assert same.exit_code == 2 and "different users" in same.output
    short = CliRunner().invoke(app, ["milvus", "init-roles"], env=env)
    assert short.exit_code == 2 and "6 to 256 characters" in short.output
    assert "writer-pass" not in short.output


def test_test_variables_are_not_settings() -> None:
    env = {"LOOKALIKE_TEST_MILVUS_URI": "http://example:19530", "LOOKALIKE_TEST_MILVUS_TOKEN": "x"}
    result = CliRunner().invoke(app, ["version"], env=env)
    assert result.exit_code == 0, result.output
