"""All pairs of CLIP vectors with cosine >= a threshold: exact for small collections, an
inverted-file (IVF) join above ``EXACT_BELOW`` vectors.

Brute force costs N x N dot products, over two hours at a million vectors. The IVF index
clusters the vectors into about 4 sqrt(N) cells and compares each vector only with those in
its ``nprobe`` nearest cells; a near-duplicate lies in the same or a neighbouring cell, so the
pairs it misses are few (recall measured in docs/benchmarks.md, "CLIP near-duplicate join").
The cells are found in a :data:`PROBE_DIMS`-d PCA projection of the vectors (k-means training
and each vector's nearest cells cost a small fraction of theirs at 512-d); the products that
decide a pair are of the full vectors, and every pair reported is checked against the
threshold, so the approximation never adds pairs.
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
_BLOCK = 4096  # rows a side of one matrix product in the IVF join: at most 64 MiB of products
PROBE_DIMS = 64  # the cells are found in a PCA projection to this many dimensions
_TRAIN_PER_CELL = 39  # faiss's k-means wants at least 39 training points per cell
_PROBE_BLOCK = 65_536  # rows projected and assigned to cells at a time
_SEED = 1234


def normalised(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    return normalise_in_place(np.array(vectors, dtype=np.float32, copy=True))


def normalise_in_place(rows: Vectors, block: int = 65_536) -> Vectors:
    """``rows`` scaled to unit length in place (a zero row stays zero), ``block`` rows at a
    time: the norms of the whole matrix at once would square it into a temporary as large as
    itself (2 GiB at 1,000,000 rows of 512-d)."""
    for start in range(0, len(rows), block):
        part = rows[start : start + block]
        part /= np.maximum(np.linalg.norm(part, axis=1, keepdims=True), 1e-12)
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
    """Pairs with cosine >= ``min_cosine`` whose second vector lies in one of the first's
    ``nprobe`` nearest IVF cells (approximate), in (i, j) order.

    The pairs of an IVF range search of every vector, computed cell by cell: for each cell, one
    matrix product of the vectors that probe it with the vectors it holds. A range search
    per vector reads its cells' vectors once per query, which at 1,000,000 vectors is memory
    traffic of terabytes; a cell's members are read once per block of its probers instead
    (docs/benchmarks.md, "CLIP near-duplicate join")."""
    count = len(vectors)
    if count < 2:
        return
    cells, probes = _probes(vectors, nprobe)
    held_from, held = _cell_lists(probes[:, :1], cells)
    probing_from, probing = _cell_lists(probes, cells)
    found_rows, found_cols, found_sims = [], [], []
    for cell in range(cells):
        members = held[held_from[cell] : held_from[cell + 1]]
        queries = probing[probing_from[cell] : probing_from[cell + 1]]
        for left in range(0, len(members), _BLOCK):
            inner = members[left : left + _BLOCK]
            block = vectors[inner].T
            for top in range(0, len(queries), _BLOCK):
                outer = queries[top : top + _BLOCK]
                sims = vectors[outer] @ block
                at_row, at_col = np.nonzero(sims >= min_cosine)
                rows, cols = outer[at_row], inner[at_col]
                keep = rows < cols
                found_rows.append(rows[keep])
                found_cols.append(cols[keep])
                found_sims.append(sims[at_row[keep], at_col[keep]])
    if not found_rows:
        return
    rows, cols = np.concatenate(found_rows), np.concatenate(found_cols)
    sims = np.concatenate(found_sims)
    order = np.lexsort((cols, rows))
    for i, j, cosine in zip(
        rows[order].tolist(), cols[order].tolist(), sims[order].tolist(), strict=True
    ):
        yield (i, j), cosine


def ivf_quantizer(vectors: Vectors) -> faiss.IndexIVFFlat:
    """An empty faiss IVF index on inner products whose quantizer is trained by k-means on a
    sample of ``vectors`` (in their own dimensions): about 4 sqrt(N) cells, 64 samples a cell,
    seeded. The join's cells are found in a projection instead (:func:`_probes`)."""
    count, dim = vectors.shape
    cells = _cells(count)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = _SEED
    index.train(np.ascontiguousarray(vectors[_sample(count, cells)]))
    return index


def _cells(count: int) -> int:
    return max(1, min(int(4 * np.sqrt(count)), count // _TRAIN_PER_CELL))


def _sample(count: int, cells: int) -> npt.NDArray[np.int64]:
    """The rows k-means trains on: 64 a cell, seeded, in row order."""
    rows = np.random.default_rng(_SEED).choice(count, min(count, cells * 64), replace=False)
    return np.sort(rows)


def _probes(vectors: Vectors, nprobe: int) -> tuple[int, npt.NDArray[np.int64]]:
    """About 4 sqrt(N) cells and each vector's ``nprobe`` nearest of them, nearest first (the
    first is the cell that holds it). The cells are k-means centroids (64 samples a cell,
    seeded) of the vectors projected by a PCA to :data:`PROBE_DIMS` dimensions (fitted on the
    same sample) and scaled to unit length again; vectors are projected and assigned
    :data:`_PROBE_BLOCK` rows at a time, so the projection never holds them all."""
    count, dim = vectors.shape
    cells = _cells(count)
    dims = min(PROBE_DIMS, dim)
    sample = np.ascontiguousarray(vectors[_sample(count, cells)])
    pca = faiss.PCAMatrix(dim, dims)
    pca.train(sample)

    def projected(rows: Vectors) -> Vectors:
        return normalise_in_place(np.asarray(pca.apply(np.ascontiguousarray(rows)), np.float32))

    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dims), dims, cells, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = _SEED
    index.train(projected(sample))
    del sample
    probes = np.empty((count, min(nprobe, cells)), np.int64)
    for start in range(0, count, _PROBE_BLOCK):
        _, found = index.quantizer.search(
            projected(vectors[start : start + _PROBE_BLOCK]), probes.shape[1]
        )
        probes[start : start + _PROBE_BLOCK] = found
    return cells, probes


def _cell_lists(
    cells_of: npt.NDArray[np.int64], cells: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The rows listed under each cell (``cells_of``: a row's cells, one per column), as
    offsets into one array of rows grouped by cell, in row order within a cell."""
    width = cells_of.shape[1]
    flat = cells_of.ravel()
    order = np.argsort(flat, kind="stable")
    offsets = np.zeros(cells + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=cells), out=offsets[1:])
    return offsets, order // width
