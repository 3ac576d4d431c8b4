"""Access control against a real Milvus server (see conftest.py for where it comes from): the
roles set up through the CLI, twice; the writer stores and searches through lookalike's store;
the read-only user reads and cannot write; nobody but an administrator drops a collection."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from services.records import to_row
from services.roles import AccessPlan, authentication_enforced
from services.schema import SchemaContract
from services.store import MilvusStore
from tests.deploy.conftest import SecuredMilvus
from tests.records import random_records

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WRITER_PASSWORD = "writer-" + uuid.uuid4().hex[:12]
READER_PASSWORD = "reader-" + uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Names:
    prefix: str
    writer: str
    reader: str
    collection: str


def client(uri: str, token: str) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri=uri, token=token, timeout=30)


@pytest.fixture(scope="module")
def names(secured_milvus: SecuredMilvus) -> Iterator[Names]:
    if not authentication_enforced(secured_milvus.uri):
        pytest.skip(f"the Milvus server at {secured_milvus.uri} does not enforce authentication")
    prefix = f"lkt{uuid.uuid4().hex[:6]}"
    chosen = Names(prefix, f"{prefix}_w", f"{prefix}_r", f"{prefix}_images")
    yield chosen
    admin = client(secured_milvus.uri, secured_milvus.admin_token)
    try:
        if admin.has_collection(chosen.collection):
            admin.drop_collection(chosen.collection)
        for user in (chosen.writer, chosen.reader):
            if user in admin.list_users():
                admin.drop_user(user_name=user)
        plan = AccessPlan.build(prefix)
        for role in (plan.writer.name, plan.reader.name):
            if role in admin.list_roles():
                admin.drop_role(role_name=role, force_drop=True)
        existing = {g["privilege_group"] for g in admin.list_privilege_groups()}
        for group in plan.groups:
            if group.name in existing:
                admin.drop_privilege_group(group_name=group.name)
    finally:
        admin.close()


@pytest.fixture(scope="module")
def roles_output(secured_milvus: SecuredMilvus, names: Names) -> list[str]:
    """The CLI's output of two runs of `lookalike milvus init-roles`."""
    env = {
        "LOOKALIKE_MILVUS_URI": secured_milvus.uri,
        "LOOKALIKE_MILVUS_TOKEN": secured_milvus.admin_token,
        "MILVUS_WRITER_PASSWORD": WRITER_PASSWORD,
        "MILVUS_READER_PASSWORD": READER_PASSWORD,
        "COLUMNS": "200",
    }
    args = [
        "milvus",
        "init-roles",
        "--prefix",
        names.prefix,
        "--writer-user",
        names.writer,
        "--reader-user",
        names.reader,
    ]
    outputs = []
    for _ in range(2):
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    return outputs


def rows(output: str) -> list[str]:
    return [line for line in output.splitlines() if "lkt" in line]


def test_init_roles_is_idempotent_and_never_prints_a_password(roles_output: list[str]) -> None:
    first, second = roles_output
    assert any("created" in line for line in rows(first))
    assert rows(second) and all("unchanged" in line for line in rows(second)), second
    for output in roles_output:
        assert WRITER_PASSWORD not in output and READER_PASSWORD not in output
        assert "warning" not in output


@pytest.fixture(scope="module")
def written(secured_milvus: SecuredMilvus, names: Names, roles_output: list[str]) -> int:
    """Rows the writer stored through lookalike's own store (which also creates the indexes)."""
    store = MilvusStore.connect(
        secured_milvus.uri,
        names.collection,
        SchemaContract.current("test-model", 8),
        token=f"{names.writer}:{WRITER_PASSWORD}",
    )
    try:
        records = random_records(40, dim=8, seed=7)
        store.upsert(records)
        assert store.count() == len(records)
        hits = store.search_clip(records[0].clip, "", 5)  # type: ignore[arg-type]
        assert hits[0].record.id == records[0].id
    finally:
        store.close()
    return len(records)


def test_the_reader_reads(secured_milvus: SecuredMilvus, names: Names, written: int) -> None:
    reader = client(secured_milvus.uri, f"{names.reader}:{READER_PASSWORD}")
    try:
        description = reader.describe_collection(names.collection)
        assert '"schema_version"' in description["description"]
        counted = reader.query(names.collection, filter="", output_fields=["count(*)"])
        assert counted[0]["count(*)"] == written
        query = np.ones(8, dtype=np.float32) / np.sqrt(8)
        found = reader.search(
            names.collection,
            data=[query.tolist()],
            anns_field="clip",
            limit=3,
            search_params={"metric_type": "COSINE"},
            output_fields=["path"],
        )
        assert len(found[0]) == 3
        assert str(reader.get_load_state(names.collection)["state"]).endswith("Loaded")
    finally:
        reader.close()


def denied(action: Callable[[], object]) -> str:
    from pymilvus.exceptions import MilvusException

    with pytest.raises(MilvusException) as caught:
        action()
    message = str(caught.value).lower()
    assert "permission" in message or "privilege" in message, message
    return message


def test_the_reader_cannot_write(secured_milvus: SecuredMilvus, names: Names, written: int) -> None:
    from pymilvus import DataType

    reader = client(secured_milvus.uri, f"{names.reader}:{READER_PASSWORD}")
    # A complete, valid row: pymilvus checks rows against the schema before it sends them.
    row = to_row(random_records(1, dim=8, seed=99)[0], with_clip=True, max_paths=64)
    try:
        denied(lambda: reader.insert(names.collection, [row]))
        denied(lambda: reader.upsert(names.collection, [row]))
        denied(lambda: reader.delete(names.collection, filter='id != ""'))
        denied(lambda: reader.release_collection(names.collection))
        denied(lambda: reader.drop_collection(names.collection))
        schema = reader.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=8)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        denied(lambda: reader.create_collection(f"{names.prefix}_other", schema=schema))
    finally:
        reader.close()
    admin = client(secured_milvus.uri, secured_milvus.admin_token)
    try:
        still = admin.query(names.collection, filter="", output_fields=["count(*)"])
        assert still[0]["count(*)"] == written
    finally:
        admin.close()


def test_the_writer_cannot_drop(secured_milvus: SecuredMilvus, names: Names, written: int) -> None:
    writer = client(secured_milvus.uri, f"{names.writer}:{WRITER_PASSWORD}")
    try:
        denied(lambda: writer.drop_collection(names.collection))
        assert writer.has_collection(names.collection)
    finally:
        writer.close()


def test_a_wrong_password_is_refused(
    secured_milvus: SecuredMilvus, names: Names, roles_output: list[str]
) -> None:
    from services.roles import password_works

    check = password_works(secured_milvus.uri)
    assert check(names.reader, READER_PASSWORD)
    assert not check(names.reader, "not-the-password")
