"""services.roles without a server: what the writer and the reader may do, and that setting up
access control twice changes nothing the second time (the fake answers as Milvus does)."""

from __future__ import annotations

import pytest

from services.errors import ConfigError
from services.roles import (
    CREATE_PRIVILEGES,
    READ_PRIVILEGES,
    WRITE_PRIVILEGES,
    AccessPlan,
    UserSpec,
    init_roles,
)
from tests.deploy.fake_rbac import FakeRbac

WRITES = {
    "Insert",
    "Upsert",
    "Delete",
    "CreateIndex",
    "Load",
    "Release",
    "CreateCollection",
    "DropCollection",
    "DropIndex",
    "CreatePartition",
    "DropPartition",
    "Import",
    "Flush",
    "Compaction",
    "CreateAlias",
    "DropAlias",
    "RenameCollection",
    "AlterDatabase",
}


def users(plan: AccessPlan) -> list[UserSpec]:
    return [
        UserSpec("lookalike_writer", "writer-secret", plan.writer.name),
        UserSpec("lookalike_reader", "reader-secret", plan.reader.name),
    ]


def set_up(fake: FakeRbac, plan: AccessPlan) -> list[tuple[str, str, str]]:
    steps = init_roles(fake, plan, users(plan), password_works=fake.password_works)
    return [(s.kind, s.name, s.action) for s in steps]


def test_the_reader_may_only_read_and_the_writer_may_not_drop() -> None:
    fake, plan = FakeRbac(), AccessPlan.build()
    set_up(fake, plan)
    reader = fake.effective("lookalike_reader")
    assert reader == set(READ_PRIVILEGES)
    assert not reader & WRITES
    writer = fake.effective("lookalike_writer")
    assert writer == set(READ_PRIVILEGES) | set(WRITE_PRIVILEGES) | set(CREATE_PRIVILEGES)
    assert not {p for p in writer if p.startswith("Drop")}
    assert {"Query", "Search", "DescribeCollection", "GetLoadState"} <= reader


def test_each_group_holds_privileges_of_one_level() -> None:
    plan = AccessPlan.build()
    levels = {g.name: g.level for g in plan.groups}
    assert levels == {
        "lookalike_read": "collection",
        "lookalike_write": "collection",
        "lookalike_create": "database",
    }
    grants = {(g, "*", "default") for g in ("lookalike_read",)}
    fake = FakeRbac()
    set_up(fake, plan)
    assert fake.roles["lookalike_reader"] == grants


def test_a_second_run_changes_nothing() -> None:
    fake, plan = FakeRbac(), AccessPlan.build()
    first = set_up(fake, plan)
    assert {action for _, _, action in first} == {"created"}
    made = list(fake.changes)
    second = set_up(fake, plan)
    assert {action for _, _, action in second} == {"unchanged"}
    assert fake.changes == made
    assert [(k, n) for k, n, _ in second] == [(k, n) for k, n, _ in first]


def test_a_group_that_drifted_is_brought_back() -> None:
    fake, plan = FakeRbac(), AccessPlan.build()
    set_up(fake, plan)
    fake.groups["lookalike_read"] |= {"Insert"}
    fake.groups["lookalike_read"] -= {"Search"}
    steps = init_roles(fake, plan, users(plan), password_works=fake.password_works)
    updated = [s for s in steps if s.action == "updated"]
    assert [(s.name, s.detail) for s in updated] == [
        ("lookalike_read", "added ['Search'], removed ['Insert']")
    ]
    assert fake.groups["lookalike_read"] == set(READ_PRIVILEGES)


def test_a_user_with_another_password_is_refused_not_reset() -> None:
    fake, plan = FakeRbac(), AccessPlan.build()
    fake.users["lookalike_reader"] = "someone-elses"
    fake.user_roles["lookalike_reader"] = set()
    with pytest.raises(ConfigError, match="'lookalike_reader' exists with another password"):
        set_up(fake, plan)
    assert fake.users["lookalike_reader"] == "someone-elses"


def test_an_existing_user_with_the_right_password_gets_its_role() -> None:
    fake, plan = FakeRbac(), AccessPlan.build()
    fake.users["lookalike_reader"] = "reader-secret"
    fake.user_roles["lookalike_reader"] = set()
    steps = set_up(fake, plan)
    assert ("user", "lookalike_reader", "unchanged") in steps
    assert ("user role", "lookalike_reader", "created") in steps
    assert fake.user_roles["lookalike_reader"] == {"lookalike_reader"}


def test_names_and_passwords_are_checked_before_milvus() -> None:
    with pytest.raises(ConfigError, match="choose a shorter --prefix"):
        AccessPlan.build(prefix="x" * 30)
    with pytest.raises(ConfigError, match="6 to 256 characters"):
        UserSpec("lookalike_writer", "short", "lookalike_writer")
    with pytest.raises(ConfigError, match="not valid in Milvus"):
        UserSpec("9lives", "long-enough", "lookalike_writer")
    assert "writer-secret" not in repr(UserSpec("w", "writer-secret", "r"))


def test_another_prefix_and_database_name_everything() -> None:
    fake, plan = FakeRbac(), AccessPlan.build(prefix="photos", db_name="shared")
    set_up(fake, plan)
    assert set(fake.roles) == {"photos_writer", "photos_reader"}
    assert {db for grants in fake.roles.values() for _, _, db in grants} == {"shared"}


class FakeRpcError(Exception):
    """Looks like grpc's RpcError: a status code behind a method."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self._code = code

    def code(self) -> str:
        return self._code


def refused_login(code: str, details: str) -> Exception:
    """What pymilvus raises when Connect fails: a connection error caused by the gRPC one."""
    from pymilvus.exceptions import MilvusException

    try:
        try:
            raise FakeRpcError(code, details)
        except FakeRpcError as rpc:
            raise MilvusException(
                code=2, message="Fail connecting to server on x, illegal connection params"
            ) from rpc
    except MilvusException as exc:
        return exc


def test_a_refused_login_is_told_from_an_unreachable_server() -> None:
    from services.errors import StoreError
    from services.roles import _is_auth_failure

    assert _is_auth_failure(refused_login("StatusCode.UNAUTHENTICATED", ""))
    assert _is_auth_failure(refused_login("StatusCode.UNKNOWN", "auth check failure, please check"))
    assert not _is_auth_failure(refused_login("StatusCode.UNAVAILABLE", "connection refused"))
    # Our own messages name the URI, which may contain anything.
    ours = StoreError("Milvus at http://auth.example:19530 is unreachable")
    assert not _is_auth_failure(ours)


@pytest.mark.integration
def test_init_roles_on_milvus_lite_says_it_has_no_access_control(milvus_uri: str) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    env = {
        "LOOKALIKE_MILVUS_URI": milvus_uri,
        "LOOKALIKE_MILVUS_TOKEN": "root:Milvus",
        "MILVUS_WRITER_PASSWORD": "writer-secret",
        "MILVUS_READER_PASSWORD": "reader-secret",
    }
    result = CliRunner().invoke(app, ["milvus", "init-roles"], env=env)
    assert result.exit_code == 1, result.output
    assert "does not implement access control" in result.output
    assert "Traceback" not in result.output and "writer-secret" not in result.output
