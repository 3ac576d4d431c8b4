"""Other hybrid query paths, run beside ``services.search`` for comparison (not in services/).

A: the path before commit e1fcd9a (light hits, then a ``get`` of the top rows); B: every pHash
held in process, a numpy Hamming scan, then one Milvus query for the survivors; C: the metadata
filter evaluated by Milvus inside the range search.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.query_latency.workload import COLLECTION, Query, variant_codes
from services.filters import Condition, compile_filter
from services.schema import SCALAR_FIELDS
from services.store import MilvusStore, PhashHit

CANDIDATE_LIMIT = 16384
# Whole rows as MilvusStore reads them: every scalar field, with and without the CLIP vector.
ROW_FIELDS = ["id", "phash", *SCALAR_FIELDS]
ROW_FIELDS_WITH_CLIP = [*ROW_FIELDS, "clip"]
# What a whole search hit carries: Milvus Lite cannot return the pHash of a hit.
HIT_FIELDS = [name for name in ROW_FIELDS_WITH_CLIP if name != "phash"]


def two_trips_hybrid(
    store: MilvusStore, q: Query, where: tuple[Condition, ...], radius: int, top_k: int
) -> list[int]:
    """A: the range search returns light hits (no tags, no paths), and a second request
    (``get``) reads the top-k rows whole."""
    expr = compile_filter(where)
    hits = store.search_phash(q.variants, radius, expr, CANDIDATE_LIMIT, whole=False)
    ranked = _top_by_cosine(hits, q, top_k)
    rows = {r.id: r for r in store.get([h.record.id for h in ranked])} if ranked else {}
    return [int(Path(rows[h.record.id].path).stem) for h in ranked if h.record.id in rows]


def milvus_filter_hybrid(
    store: MilvusStore, q: Query, where: tuple[Condition, ...], radius: int, top_k: int
) -> list[int]:
    """C: Milvus evaluates the metadata filter inside the range search, over every row."""
    hits = store.search_phash(
        q.variants, radius, compile_filter(where), CANDIDATE_LIMIT, whole=True
    )
    return [int(Path(h.record.path).stem) for h in _top_by_cosine(hits, q, top_k)]


def _top_by_cosine(hits: list[PhashHit], q: Query, top_k: int) -> list[PhashHit]:
    """The ``top_k`` hits in ``services.search``'s order: cosine, then Hamming, then id."""
    return sorted(
        hits, key=lambda h: (-float(np.dot(h.record.clip, q.clip)), h.hamming, h.record.id)
    )[:top_k]


def _ranked(q: Query, hits: list[tuple[str, int, dict[str, Any]]], top_k: int) -> list[int]:
    """Best distance per id, then cosine order (as ``services.search``); row indices."""
    best: dict[str, tuple[int, dict[str, Any]]] = {}
    for key, distance, entity in hits:
        if key not in best or distance < best[key][0]:
            best[key] = (distance, entity)
    records = [
        (-float(np.asarray(e["clip"], np.float32) @ q.clip), d, key, str(e["path"]))
        for key, (d, e) in best.items()
    ]
    records.sort()
    return [int(Path(path).stem) for *_, path in records[:top_k]]


class HashCache:
    """B: every row's pHash held in process (8 bytes a row, read once with
    ``MilvusStore.scan_hashes``); the Hamming stage is a numpy scan, and one Milvus query
    fetches the candidates that pass the filter, with their CLIP vectors and display fields."""

    def __init__(self, store: MilvusStore) -> None:
        tick = time.perf_counter()
        scan = store.scan_hashes()
        self.load_s = time.perf_counter() - tick
        self.ids = np.array(scan.ids, dtype="S64")
        self.codes = scan.codes
        self.store = store

    def search(self, q: Query, where: tuple[Condition, ...], radius: int, top_k: int) -> list[int]:
        distance = np.full(len(self.codes), 64, dtype=np.uint8)
        for code in variant_codes(q).tolist():
            np.minimum(distance, np.bitwise_count(self.codes ^ np.uint64(code)), out=distance)
        found = np.flatnonzero(distance <= radius)
        if not len(found):
            return []
        keys = [key.decode() for key in self.ids[found].tolist()]
        quoted = ", ".join(f'"{key}"' for key in keys)
        expr = " and ".join(x for x in (f"id in [{quoted}]", compile_filter(where)) if x)
        rows = self.store.client.query(COLLECTION, filter=expr, output_fields=HIT_FIELDS)
        by_id = dict(zip(keys, distance[found].tolist(), strict=True))
        return _ranked(q, [(str(r["id"]), by_id[str(r["id"])], r) for r in rows], top_k)
