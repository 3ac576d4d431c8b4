"""``row_predicate`` evaluates a filter in process exactly as Milvus evaluates the compiled
expression: random conditions on every filterable field, both ways, on a real Milvus Lite."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from services.filters import Condition, Scalar, compile_filter, row_predicate
from services.schema import FILTERABLE_FIELDS, FieldKind
from services.store import MilvusStore
from tests.records import random_records

pytestmark = pytest.mark.integration

_EVERYTHING = bytes(8)  # a query hash: radius 63 reaches every stored row but all-ones ones
_ORDERED = ("==", "!=", "<", "<=", ">", ">=")


@pytest.fixture(scope="module")
def stored(milvus_uri: str) -> tuple[MilvusStore, dict[str, dict[str, Any]]]:
    from services.schema import SchemaContract

    store = MilvusStore.connect(milvus_uri, "filter_semantics", SchemaContract.current(None, None))
    store.drop()
    store = MilvusStore.connect(milvus_uri, "filter_semantics", SchemaContract.current(None, None))
    records = random_records(400, dim=None, seed=3)
    odd = [
        replace(records[0], source="Ünïcode ☃", tags=("a b", 'say "hi"'), camera_model="X100V"),
        replace(records[1], source="", tags=(), paths=("/b/one.jpg", "/c/two.jpg")),
        replace(records[2], source="phone\\\\scan", cluster=7, dup_of=records[3].id),
        replace(records[4], width=0, dup_hamming=3, ahash="ffffffffffffffff"),
    ]
    store.upsert(odd + records[4:])
    hits = store.search_phash([_EVERYTHING], 63, "", 16384, whole=True, with_vectors=False)
    assert len(hits) > 390
    return store, {hit.record.id: dict(hit.row) for hit in hits}


def _value(rng: np.random.Generator, kind: FieldKind, seen: list[Any]) -> Scalar:
    """A value of ``kind``: mostly one that is stored (so equality matches), else a near one."""
    pick = seen[int(rng.integers(len(seen)))]
    if kind is FieldKind.BOOL:
        return bool(rng.random() < 0.5)
    if kind is FieldKind.INT:
        return int(pick) + int(rng.choice([0, 0, -1, 1, 1000]))
    if kind is FieldKind.FLOAT:
        return float(pick) if rng.random() < 0.5 else float(rng.uniform(-90, 90))
    text = str(pick[int(rng.integers(len(pick)))] if isinstance(pick, list) and pick else pick)
    return text if rng.random() < 0.7 else text[: int(rng.integers(0, len(text) + 1))] + "~"


def _condition(rng: np.random.Generator, rows: list[dict[str, Any]]) -> Condition:
    field = str(rng.choice(sorted(FILTERABLE_FIELDS)))
    kind = FILTERABLE_FIELDS[field]
    seen = [row[field] for row in rows]
    if kind is FieldKind.STRING_ARRAY:
        seen = [tags for tags in seen if tags] or [["none"]]
        if rng.random() < 0.5:
            return Condition(field, "contains", _value(rng, kind, seen))
        return Condition(field, "in", tuple(_value(rng, kind, seen) for _ in range(3)))
    if rng.random() < 0.25:
        return Condition(field, "in", tuple(_value(rng, kind, seen) for _ in range(4)))
    ops = ("==", "!=") if kind is FieldKind.BOOL else _ORDERED
    return Condition(field, str(rng.choice(ops)), _value(rng, kind, seen))  # type: ignore[arg-type]


def test_row_predicate_agrees_with_milvus(stored) -> None:  # type: ignore[no-untyped-def]
    store, by_id = stored
    rows = list(by_id.values())
    rng = np.random.default_rng(11)
    tried = matched = 0
    for _ in range(300):
        conditions = [_condition(rng, rows) for _ in range(int(rng.integers(1, 4)))]
        in_milvus = {
            hit.record.id
            for hit in store.search_phash(
                [_EVERYTHING], 63, compile_filter(conditions), 16384, with_vectors=False
            )
        }
        keep = row_predicate(conditions)
        in_process = {key for key, row in by_id.items() if keep(row)}
        assert in_process == in_milvus, compile_filter(conditions)
        tried += 1
        matched += bool(in_milvus) and len(in_milvus) < len(rows)
    assert matched > tried // 4, "most trials should split the rows, not keep all or none"


def test_row_predicate_rejects_what_compile_filter_rejects() -> None:
    from services.errors import FilterError

    for bad in (
        Condition("nope", "==", 1),
        Condition("width", ">=", "wide"),
        Condition("has_gps", "<", True),
        Condition("tags", ">", "cat"),
        Condition("source", "contains", "x"),
    ):
        with pytest.raises(FilterError):
            row_predicate([bad])
