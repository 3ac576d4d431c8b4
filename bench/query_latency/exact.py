"""The exact answers of ``bench.query_latency``'s queries, computed in process (numpy, faiss)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.query_latency.workload import DIM, Query, Rows, row_id, variant_codes

HAMMING_MODES = frozenset({"hybrid", "hybrid_filter", "phash"})
Mask = npt.NDArray[np.bool_]
Indices = npt.NDArray[Any]


def exact(mode: str, q: Query, rows: Rows, mask: Mask, radius: int, top_k: int) -> list[int]:
    """Row indices of the exact answer, best first, as ``services.search`` orders them."""
    if mode in HAMMING_MODES:
        distance = np.min(np.bitwise_count(rows.codes[None, :] ^ variant_codes(q)[:, None]), 0)
        keep = distance <= radius
        if mode == "hybrid_filter":
            keep &= mask
        found = np.flatnonzero(keep)
        return _ordered(mode, q, rows, found, distance[found], top_k)
    vector = q.text_clip if mode == "text" else q.clip
    cosines = rows.clip @ vector
    if mode == "clip_filter":
        cosines = np.where(mask, cosines, -np.inf)
    top = np.argpartition(-cosines, top_k)[:top_k]
    return top[np.argsort(-cosines[top], kind="stable")].tolist()


def _ordered(
    mode: str, q: Query, rows: Rows, found: Indices, hamming: Indices, top_k: int
) -> list[int]:
    """The top ``top_k`` of the Hamming candidates ``found``: by distance then id (pure pHash),
    else by cosine, then distance, then row."""
    if mode == "phash":
        order = np.lexsort((np.array([row_id(int(i)) for i in found]), hamming))
    else:
        order = np.lexsort((found, hamming, -(rows.clip[found] @ q.clip)))
    result: list[int] = found[order][:top_k].tolist()
    return result


class Faiss:
    """The same answers with faiss, on one core: exact inner product (rows are unit vectors),
    and a binary range search (strict radius) then a rerank in numpy for the Hamming modes."""

    def __init__(self, rows: Rows, mask: Mask) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one query at a time, on one core, like the numpy answer
        self.flat = faiss.IndexFlatIP(DIM)
        self.flat.add(rows.clip)
        self.binary = faiss.IndexBinaryFlat(64)
        codes = np.ascontiguousarray(rows.codes.astype(">u8")).view(np.uint8).reshape(-1, 8)
        self.binary.add(codes)
        self.selector = faiss.IDSelectorBatch(np.flatnonzero(mask).astype(np.int64))
        self.rows, self.mask = rows, mask

    def answer(self, mode: str, q: Query, radius: int, top_k: int) -> list[int]:
        import faiss

        if mode in HAMMING_MODES:
            return self._hamming(mode, q, radius, top_k)
        vector = (q.text_clip if mode == "text" else q.clip)[None, :]
        params = faiss.SearchParameters(sel=self.selector) if mode == "clip_filter" else None
        _, labels = self.flat.search(vector, top_k, params=params)
        return [int(i) for i in labels[0] if i >= 0]

    def _hamming(self, mode: str, q: Query, radius: int, top_k: int) -> list[int]:
        query = np.frombuffer(b"".join(q.variants), np.uint8).reshape(-1, 8)
        _, distances, labels = self.binary.range_search(query, radius + 1)
        best: dict[int, int] = {}
        for label, distance in zip(labels.tolist(), distances.tolist(), strict=True):
            if label not in best or distance < best[label]:
                best[label] = distance
        found = np.array(sorted(best), dtype=np.int64)
        if mode == "hybrid_filter" and len(found):
            found = found[self.mask[found]]
        hamming = np.array([best[int(i)] for i in found], dtype=np.int64)
        return _ordered(mode, q, self.rows, found, hamming, top_k)


def recall_at_k(found: Sequence[int], truth: Sequence[int]) -> float:
    if not truth:
        return 1.0 if not found else 0.0
    return len(set(found) & set(truth)) / len(truth)


def faiss_or_none(rows: Rows, mask: Mask, wanted: bool) -> Faiss | None:
    """A :class:`Faiss` when ``wanted`` and faiss is installed, else None."""
    if not wanted or importlib.util.find_spec("faiss") is None:
        return None
    return Faiss(rows, mask)
