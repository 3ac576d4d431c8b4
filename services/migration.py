"""Upgrading a collection to the current schema version in place (``lookalike migrate``).

Milvus Lite 2.5 implements neither ``add_collection_field`` nor ``rename_collection``, so an
upgrade copies, the same way on every server::

    NAME (v1 or v2) --copy, computing the fields added since--> NAME__migrating (v3, NAME's
                                                                  instance id)
    drop NAME; create NAME (v3, the same instance id)
    NAME__migrating --copy--> NAME; drop NAME__migrating

The fields a version added (:data:`services.schema.FIELDS_ADDED`: ``frame_codes`` in 2,
``patch_codes`` in 3) are computed from each row's image, decoded as ingestion decodes it.

Every step can be repeated, and which step comes next is read from the server on start
(:class:`Stage`): the staging collection holds every row before the original is dropped, and a
copy skips the rows its target already holds, so a run killed at any point is finished by the
next one. Rows are copied field for field (vectors, ``paths``, ``tags``, ``dup_*``, ``cluster``)
a batch at a time. Like :mod:`services.store` this module speaks to Milvus in rows; what it
returns are dataclasses. Nothing else may write to the collection meanwhile (the CLI checks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any

from services.errors import CollectionNotFoundError, DecodeError, SchemaMismatchError
from services.frames import frame_codes
from services.metadata import sha256_hex
from services.milvus_errors import mapped
from services.patches import image_patch_codes
from services.pipeline import collection_draft_size, load_for_signals
from services.records import binary_vector
from services.schema import FIELDS_ADDED, SCALAR_FIELDS, SCHEMA_VERSION, SchemaContract
from services.sources import Sources
from services.store import LEGACY_INSTANCE, MilvusStore, _quiet

log = logging.getLogger(__name__)

STAGING_SUFFIX = "__migrating"
MAX_COLLECTION_NAME = 255  # Milvus's limit
COPY_BATCH = 256  # rows per read and write: a few MB with CLIP vectors
READ_THREADS = 4  # images read and decoded at once (I/O-bound for s3:// and https://)
FROM_VERSIONS = tuple(range(1, SCHEMA_VERSION))  # the versions this module upgrades from

# (phase, rows done, rows in all) as the copies go; a step without rows reports (phase, 0, 0).
ProgressFn = Callable[[str, int, int], None]


class Stage(Enum):
    """Where a collection stands, read from the server; each names the next step."""

    CURRENT = "current"  # at the current version, nothing to do
    FRESH = "fresh"  # at the old version, no staging collection yet
    COPYING = "copying"  # at the old version, a staging collection filled partly or wholly
    COPIED = "copied"  # the original dropped, the staging collection holds every row
    RESTORING = "restoring"  # re-created at the current version, being filled from staging


@dataclass(frozen=True)
class Plan:
    """What a migration of ``collection`` will do from where it stands."""

    collection: str
    staging: str
    stage: Stage
    from_version: int
    contract: SchemaContract  # what the upgraded collection promises
    instance: str  # the collection's instance id, kept (files caches are keyed by it)
    rows: int  # rows to carry over

    @property
    def stored_version(self) -> int | None:
        """The schema version of the collection as it stands; None while it is dropped."""
        if self.stage in (Stage.FRESH, Stage.COPYING):
            return self.from_version
        return None if self.stage is Stage.COPIED else SCHEMA_VERSION

    @property
    def computed(self) -> tuple[str, ...]:
        """The fields the copy computes from each row's image: those added since
        ``from_version``."""
        return fields_added_since(self.from_version)

    @property
    def steps(self) -> list[str]:
        """The steps still to take, in words."""
        name, staging = self.collection, self.staging
        steps = []
        if self.stage is Stage.FRESH:
            steps.append(f"create {staging} (schema {SCHEMA_VERSION}, instance {self.instance})")
        if self.stage in (Stage.FRESH, Stage.COPYING):
            steps += [
                f"copy {self.rows} rows of {name} into {staging}, computing "
                f"{' and '.join(self.computed)} from each row's image",
                f"drop {name}",
            ]
        if self.stage in (Stage.FRESH, Stage.COPYING, Stage.COPIED):
            steps.append(f"create {name} (schema {SCHEMA_VERSION}, instance {self.instance})")
        if self.stage is not Stage.CURRENT:
            steps += [f"copy {self.rows} rows of {staging} into {name}", f"drop {staging}"]
        return steps


@dataclass(frozen=True)
class Unreadable:
    """A row whose image could not be read: the fields the migration computes stay "" (it is
    matched by its whole frame)."""

    path: str
    error: str


@dataclass(frozen=True)
class MigrationReport:
    plan: Plan
    rows: int  # rows in the upgraded collection
    unreadable: list[Unreadable]
    seconds: float

    @property
    def migrated(self) -> int:
        """Rows that have the computed fields."""
        return self.rows - len(self.unreadable)


def fields_added_since(version: int) -> tuple[str, ...]:
    """The fields of the current schema that a collection of ``version`` lacks."""
    return tuple(
        name for added in range(version + 1, SCHEMA_VERSION + 1) for name in FIELDS_ADDED[added]
    )


@dataclass(frozen=True)
class SignalReader:
    """The computed fields of a stored row (``frame_codes``, ``patch_codes``) from its image,
    read and decoded as ingestion does."""

    sources: Sources
    max_pixels: int
    clip: bool  # the collection holds CLIP vectors: its workers decode at CLIP's draft size

    def read(self, content_id: str, paths: Sequence[str]) -> tuple[dict[str, str], str]:
        """({field: text}, "") from the first of ``paths`` that still holds the row's content
        (its sha256 is the row id); ({}, why) when none does."""
        draft = collection_draft_size(clip=self.clip)
        reasons: list[tuple[str, str]] = []
        for path in paths:
            try:
                loaded = load_for_signals(
                    path,
                    max_pixels=self.max_pixels,
                    embedder=None,
                    sources=self.sources,
                    draft=draft,
                )
            except DecodeError as exc:
                reasons.append((path, exc.reason))
                continue
            if sha256_hex(loaded.data) != content_id:
                reasons.append((path, "its content changed since it was stored"))
                continue
            frames = frame_codes(loaded.image)
            patches = image_patch_codes(loaded.image, frames)
            return {"frame_codes": frames.to_hex(), "patch_codes": patches.to_hex()}, ""
        if len(reasons) == 1:
            return {}, reasons[0][1]
        return {}, "; ".join(f"{path}: {reason}" for path, reason in reasons)


def staging_name(collection: str) -> str:
    return collection + STAGING_SUFFIX


def inspect(client: Any, uri: str, collection: str) -> Plan:
    """The plan for ``collection`` from what the server holds now (changes nothing)."""
    staging = staging_name(collection)
    if len(staging) > MAX_COLLECTION_NAME:
        raise SchemaMismatchError(
            f"collection name {collection!r} is too long to migrate: the staging collection "
            f"{staging!r} would exceed {MAX_COLLECTION_NAME} characters"
        )
    with mapped(f"describe collection {collection}", uri):
        description = _description(client, collection)
        staged = _description(client, staging)
    if description is None and staged is None:
        raise CollectionNotFoundError(f"no collection {collection!r} at {uri}: nothing to migrate")
    staged_contract = None
    if staged is not None:
        staged_contract = SchemaContract.from_description(staging, staged)
    if description is None:
        assert staged is not None and staged_contract is not None
        _check_staging(staging, staged_contract, collection)
        instance = SchemaContract.instance_of(staged) or LEGACY_INSTANCE
        return _plan(client, uri, collection, Stage.COPIED, staged_contract, instance)
    contract = SchemaContract.from_description(collection, description)
    instance = SchemaContract.instance_of(description) or LEGACY_INSTANCE
    if contract.schema_version > SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"collection {collection!r} has schema version {contract.schema_version}, newer "
            f"than this lookalike ({SCHEMA_VERSION}): upgrade lookalike instead"
        )
    if contract.schema_version not in (*FROM_VERSIONS, SCHEMA_VERSION):
        raise SchemaMismatchError(
            f"collection {collection!r} has schema version {contract.schema_version}; "
            f"`lookalike migrate` upgrades versions {', '.join(map(str, FROM_VERSIONS))} only"
        )
    if staged is not None:
        assert staged_contract is not None
        _check_staging(staging, staged_contract, collection)
        if (SchemaContract.instance_of(staged) or LEGACY_INSTANCE) != instance:
            raise SchemaMismatchError(
                f"collection {staging!r} is not a copy of {collection!r} (another instance id): "
                f"drop it if it is left over, then run `lookalike migrate` again"
            )
    if contract.schema_version == SCHEMA_VERSION:
        stage = Stage.CURRENT if staged is None else Stage.RESTORING
        return _plan(client, uri, collection, stage, contract, instance)
    _check_old_fields(client, uri, collection, contract)
    stage = Stage.FRESH if staged is None else Stage.COPYING
    return _plan(client, uri, collection, stage, contract, instance)


def migrate(
    client: Any,
    uri: str,
    plan: Plan,
    reader: SignalReader,
    *,
    progress: ProgressFn | None = None,
    batch_size: int = COPY_BATCH,
) -> MigrationReport:
    """Carry ``plan`` out from its stage to the end (see the module docstring)."""
    started = time.monotonic()
    report: ProgressFn = progress or (lambda *_: None)
    name, staging, stage = plan.collection, plan.staging, plan.stage
    reasons: dict[str, str] = {}
    if stage is Stage.CURRENT:
        return MigrationReport(plan, plan.rows, [], time.monotonic() - started)
    if stage in (Stage.FRESH, Stage.COPYING):
        report("create staging", 0, 0)
        _open(client, uri, staging, plan)
        computing = (reader, plan.computed)
        _copy(client, uri, name, staging, plan.rows, report, batch_size, computing, reasons)
        _check_copied(client, uri, name, staging)
        report("drop original", 0, 0)
        _drop(client, uri, name)
    if stage in (Stage.FRESH, Stage.COPYING, Stage.COPIED):
        report("create", 0, 0)
    _open(client, uri, name, plan)
    _copy(client, uri, staging, name, plan.rows, report, batch_size, None, reasons)
    _check_copied(client, uri, staging, name)
    report("drop staging", 0, 0)
    _drop(client, uri, staging)
    unreadable = _unreadable(client, uri, name, reasons)
    rows = _count(client, uri, name)
    return MigrationReport(plan, rows, unreadable, time.monotonic() - started)


def _description(client: Any, collection: str) -> str | None:
    if not client.has_collection(collection):
        return None
    return str(client.describe_collection(collection).get("description", ""))


def _check_staging(staging: str, contract: SchemaContract, collection: str) -> None:
    if contract.schema_version != SCHEMA_VERSION:
        raise SchemaMismatchError(
            f"collection {staging!r} (a migration's staging copy of {collection!r}) has schema "
            f"version {contract.schema_version}, not {SCHEMA_VERSION}: drop it if it is left "
            "over, then run `lookalike migrate` again"
        )


def _fields(client: Any, uri: str, collection: str) -> list[str]:
    with mapped(f"describe collection {collection}", uri):
        described = client.describe_collection(collection)
    return [str(f["name"]) for f in described.get("fields", [])]


def _check_old_fields(client: Any, uri: str, collection: str, contract: SchemaContract) -> None:
    """Refuse a collection whose fields are not those of the old version (nothing to copy
    them into)."""
    current = {"id", "phash", *SCALAR_FIELDS, *(["clip"] if contract.clip_dim else [])}
    expected = current - set(fields_added_since(contract.schema_version))
    found = set(_fields(client, uri, collection))
    if found != expected:
        raise SchemaMismatchError(
            f"collection {collection!r} says schema version {contract.schema_version} but its "
            f"fields differ from that version's (extra: {sorted(found - expected)}, missing: "
            f"{sorted(expected - found)}): lookalike cannot migrate it"
        )


def _plan(
    client: Any,
    uri: str,
    collection: str,
    stage: Stage,
    stored: SchemaContract,
    instance: str,
) -> Plan:
    """The plan, with the row count of the collection to copy from next."""
    contract = SchemaContract.current(stored.clip_model, stored.clip_dim)
    source = staging_name(collection) if stage in (Stage.COPIED, Stage.RESTORING) else collection
    with mapped(f"load collection {source}", uri):
        client.load_collection(source)
    rows = _count(client, uri, source)
    version = stored.schema_version if stage in (Stage.FRESH, Stage.COPYING) else SCHEMA_VERSION
    return Plan(collection, staging_name(collection), stage, version, contract, instance, rows)


def _open(client: Any, uri: str, collection: str, plan: Plan) -> None:
    """Create (or find) ``collection`` with the upgraded contract and ``plan``'s instance id,
    its indexes and its load state, through the store (one definition of the schema)."""
    store = MilvusStore(client, collection, plan.contract, uri=uri, create_instance=plan.instance)
    store.open(create=True)
    if store.instance != plan.instance:
        raise SchemaMismatchError(
            f"collection {collection!r} has instance {store.instance}, the migration of "
            f"{plan.collection!r} expected {plan.instance}: drop it if it is left over"
        )


def _drop(client: Any, uri: str, collection: str) -> None:
    with mapped(f"drop collection {collection}", uri):
        client.drop_collection(collection)


def _count(client: Any, uri: str, collection: str) -> int:
    with mapped(f"count rows of {collection}", uri):
        rows = client.query(collection, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"])


def _check_copied(client: Any, uri: str, source: str, target: str) -> None:
    """Every row of ``source`` is in ``target`` (the copy wrote or found each id): ``target``
    has at least as many rows."""
    have, want = _count(client, uri, target), _count(client, uri, source)
    if have < want:
        raise SchemaMismatchError(
            f"{target!r} holds {have} rows after the copy, fewer than the {want} of {source!r}: "
            "did something delete rows during the migration? Stop it and run `lookalike "
            "migrate` again"
        )


def _batches(
    client: Any, uri: str, collection: str, fields: list[str], expr: str, batch_size: int
) -> Iterator[list[dict[str, Any]]]:
    with mapped(f"read {collection}", uri), _quiet("pymilvus.orm.iterator"):
        iterator = client.query_iterator(
            collection, batch_size=batch_size, filter=expr, output_fields=fields
        )
    try:
        while True:
            with mapped(f"read a batch of {collection}", uri):
                batch = iterator.next()
            if not batch:
                return
            yield [dict(row) for row in batch]
    finally:
        iterator.close()


def _copy(
    client: Any,
    uri: str,
    source: str,
    target: str,
    total: int,
    report: ProgressFn,
    batch_size: int,
    computing: tuple[SignalReader, tuple[str, ...]] | None,
    reasons: dict[str, str],
) -> None:
    """Every row of ``source`` that ``target`` lacks, written there field for field (with the
    fields ``computing`` names from its reader, when given)."""
    phase = f"copy {source} -> {target}"
    fields = [f for f in _fields(client, uri, source) if f != "id"]
    done = 0
    report(phase, done, total)
    with ThreadPoolExecutor(READ_THREADS) as pool:
        for batch in _batches(client, uri, source, ["id", *fields], "", batch_size):
            present = _present(client, uri, target, [str(row["id"]) for row in batch])
            rows = [_writable(row) for row in batch if str(row["id"]) not in present]
            if computing is not None and rows:
                reader, computed = computing
                paths = [list(dict.fromkeys([r["path"], *(r.get("paths") or [])])) for r in rows]
                read = pool.map(reader.read, [str(r["id"]) for r in rows], paths)
                for row, (fields_read, reason) in zip(rows, read, strict=True):
                    row.update({name: fields_read.get(name, "") for name in computed})
                    if reason:
                        reasons[str(row["id"])] = reason
            if rows:
                with mapped(f"write {len(rows)} rows into {target}", uri):
                    client.upsert(target, rows)
            done += len(batch)
            report(phase, done, total)


def _present(client: Any, uri: str, collection: str, ids: list[str]) -> set[str]:
    with mapped(f"look up {len(ids)} ids in {collection}", uri):
        rows = client.get(collection, ids=ids, output_fields=["id"])
    return {str(row["id"]) for row in rows}


def _writable(row: dict[str, Any]) -> dict[str, Any]:
    """A row as read, as a write takes it (a binary vector comes back as a list of bytes)."""
    out = dict(row)
    out["phash"] = binary_vector(row["phash"])
    if "clip" in out:
        out["clip"] = [float(x) for x in out["clip"]]
    return out


def _unreadable(
    client: Any, uri: str, collection: str, reasons: dict[str, str]
) -> list[Unreadable]:
    """The rows left without the computed fields, with why where this run tried them (every
    migration computes the newest version's fields, and ingestion never leaves them "")."""
    newest = FIELDS_ADDED[SCHEMA_VERSION][0]
    found: list[Unreadable] = []
    for batch in _batches(
        client, uri, collection, ["id", "path"], f'{newest} == ""', COPY_BATCH * 4
    ):
        for row in batch:
            reason = reasons.get(str(row["id"]), "could not be read when an earlier run copied it")
            found.append(Unreadable(str(row["path"]), reason))
    return sorted(found, key=lambda item: item.path)


__all__ = [
    "MigrationReport",
    "Plan",
    "SignalReader",
    "Stage",
    "Unreadable",
    "fields_added_since",
    "inspect",
    "migrate",
    "staging_name",
]
