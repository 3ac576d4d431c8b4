"""All pairs of CLIP vectors with cosine >= a threshold: exact for small collections, an
inverted-file (faiss IVF) range search above ``EXACT_BELOW`` vectors.

Brute force costs N x N dot products, over two hours at a million vectors. The IVF index
clusters the vectors into about 4 sqrt(N) cells and compares each vector only with those in
its ``nprobe`` nearest cells; a near-duplicate lies in the same or a neighbouring cell, so the
pairs it misses are few (recall measured in docs/benchmarks.md, "CLIP near-duplicate join").
Every pair reported is checked against the threshold, so the approximation never adds pairs.
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
ClipPair = tuple[tuple[int, int], float]

EXACT_BELOW = 20_000  # vectors: below this brute force takes a few seconds and is exact
NPROBE = 16  # IVF cells searched per vector: recall >= 0.99 at 100,000 (docs/benchmarks.md)
_EXACT_CHUNK = 1024  # rows per matrix product: memory O(chunk x N), never N x N
_QUERY_BLOCK = 8192  # rows per range search, so that its result arrays stay small
_TRAIN_PER_CELL = 39  # faiss's k-means wants at least 39 training points per cell
_SEED = 1234


def normalised(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    rows = np.array(vectors, dtype=np.float32, copy=True)
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    return rows


def clip_join(
    vectors: Vectors, min_cosine: float, *, exact_below: int = EXACT_BELOW, nprobe: int = NPROBE
) -> Iterator[ClipPair]:
    """Pairs ``((i, j), cosine)`` with i < j and cosine >= ``min_cosine``, in (i, j) order, of
    unit-length rows; exact below ``exact_below`` rows, approximate (IVF) above."""
    if len(vectors) < exact_below:
        return exact_join(vectors, min_cosine)
    return ivf_join(vectors, min_cosine, nprobe=nprobe)


def exact_join(vectors: Vectors, min_cosine: float) -> Iterator[ClipPair]:
    """Every pair with cosine >= ``min_cosine``, by brute force in row chunks."""
    for start in range(0, len(vectors), _EXACT_CHUNK):
        sims = vectors[start : start + _EXACT_CHUNK] @ vectors.T
        rows, cols = np.nonzero(sims >= min_cosine)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + row
            if i < col:
                yield (i, col), float(sims[row, col])


def ivf_join(vectors: Vectors, min_cosine: float, *, nprobe: int = NPROBE) -> Iterator[ClipPair]:
    """Pairs with cosine >= ``min_cosine`` found by an IVF range search (approximate)."""
    count, dim = vectors.shape
    if count < 2:
        return
    cells = max(1, min(int(4 * np.sqrt(count)), count // _TRAIN_PER_CELL))
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = _SEED
    sample = np.random.default_rng(_SEED).choice(count, min(count, cells * 64), replace=False)
    index.train(np.ascontiguousarray(vectors[np.sort(sample)]))
    index.add(np.ascontiguousarray(vectors))
    index.nprobe = min(nprobe, cells)
    # faiss keeps inner products strictly above the radius; step just below to keep equality.
    radius = float(np.nextafter(np.float32(min_cosine), np.float32(-np.inf)))
    for start in range(0, count, _QUERY_BLOCK):
        block = np.ascontiguousarray(vectors[start : start + _QUERY_BLOCK])
        limits, sims, cols = index.range_search(block, radius)
        rows = np.repeat(np.arange(start, start + len(block)), np.diff(limits).astype(np.int64))
        keep = (rows < cols) & (sims >= min_cosine)
        rows, cols, sims = rows[keep], cols[keep], sims[keep]
        order = np.lexsort((cols, rows))
        for i, j, cosine in zip(
            rows[order].tolist(), cols[order].tolist(), sims[order].tolist(), strict=True
        ):
            yield (i, j), cosine
