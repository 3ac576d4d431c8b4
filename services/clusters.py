"""Clusters of a collection's CLIP vectors, a 2-D map of them, and per-image outlier scores.

:func:`cluster_collection` reads the vectors once, clusters the L2-normalised vectors
(MiniBatchKMeans, or HDBSCAN on a 50-d PCA for the density-based option, noise = -1), picks each
cluster's most representative images (closest to its centroid), scores every image by its cosine
distance to its centroid, lays the collection out in 2-D (UMAP when umap-learn is installed, PCA
otherwise) and writes each row's cluster id back to the ``cluster`` field, so that searches and
the UI can filter on it. Every random step is seeded (``random_state=0``): the same rows give the
same clusters.

A run over rows that already hold cluster ids keeps those ids (:func:`keep_cluster_ids`), and
k-means starts from the stored clusters' centroids when it is asked for as many clusters as are
stored: after the collection grows, a run rewrites the rows that joined or changed a cluster,
not every row whose cluster came out under another number (on Milvus Lite a rewritten row costs
1 to 3.5 ms, more as the collection grows: docs/benchmarks.md).
"""

from __future__ import annotations

import itertools
import logging
import time
import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from services.clip_join import normalise_in_place
from services.errors import QueryError
from services.schema import UNASSIGNED_CLUSTER
from services.store import VectorScan, VectorStore

log = logging.getLogger(__name__)

Method = Literal["kmeans", "density"]
Projection = Literal["umap", "pca"]
Progress = Callable[[str, float], None]
Matrix = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]

REPRESENTATIVES = 5
AUTO_K_RANGE = (2, 30)
AUTO_K_SAMPLE = 4000
DENSITY_SAMPLE = 20_000
DENSITY_DIMS = 50
UMAP_SAMPLE = 5000
UMAP_NEIGHBOURS = 10
WRITE_BATCH = 1000
_SEED = 0
_CHUNK = 8192


@dataclass(frozen=True)
class ClusterInfo:
    """One cluster: its size, its most central images (id, path), its mean cosine distance."""

    id: int
    size: int
    representatives: tuple[tuple[str, str], ...]
    mean_distance: float


@dataclass(frozen=True)
class MapPoint:
    """One image on the 2-D map; ``outlier_score`` is its distance to its centroid as a z-score
    within its cluster (higher: less typical)."""

    id: str
    path: str
    x: float
    y: float
    cluster: int
    outlier_score: float


@dataclass(frozen=True)
class ClusterReport:
    clusters: list[ClusterInfo]
    points: list[MapPoint]
    stats: dict[str, int | float | str] = field(default_factory=dict)

    def to_dict(self, *, with_points: bool = False) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "clusters": [
                {
                    "id": c.id,
                    "size": c.size,
                    "mean_distance": c.mean_distance,
                    "representatives": [{"id": i, "path": p} for i, p in c.representatives],
                }
                for c in self.clusters
            ],
            "stats": self.stats,
        }
        if with_points:
            payload["points"] = [p.__dict__ for p in self.points]
        return payload


def cluster_collection(
    store: VectorStore,
    *,
    k: int | None,
    method: Method = "kmeans",
    where: str = "",
    progress: Progress | None = None,
    projection: Projection | None = None,
    min_cluster_size: int | None = None,
    write: bool = True,
) -> ClusterReport:
    """Cluster the rows matching ``where`` and write their cluster ids back (unless ``write``).

    ``k=None`` with k-means picks k in 2..30 by the silhouette score (cosine) of k-means fits on a
    random sample of at most 4,000 rows (PCA to 50-d), then fits the chosen k on every row.
    ``method="density"`` ignores ``k``: HDBSCAN on at most 20,000 sampled rows (PCA to 50-d);
    the other rows take the label of their nearest sampled row. ``projection=None``: UMAP if
    importable, else PCA. Raises QueryError for a hash-only collection or when no row matches.
    """
    report = progress or (lambda stage, fraction: None)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    scan = _pull(store, where, report)
    vectors = scan.clip
    timings["pull_s"] = time.perf_counter() - started

    started = time.perf_counter()
    stats: dict[str, int | float | str] = {"rows": len(scan.ids), "method": method}
    if method == "kmeans":
        labels, centroids = _kmeans(vectors, k, scan.clusters, stats, report)
    elif method == "density":
        labels, centroids = _density(vectors, min_cluster_size, stats, report)
    else:
        raise QueryError(f"unknown clustering method {method!r}: use kmeans or density")
    distances = _centroid_distances(vectors, labels, centroids)
    scores = _outlier_scores(distances, labels, len(centroids))
    clusters = _cluster_infos(scan, labels, distances, len(centroids))
    # A run over some rows leaves the others' clusters alone: a new cluster must not take an
    # id that rows outside the run hold.
    held_outside = _held_outside(store, scan) if where else frozenset()
    labels, clusters = _keep_ids(labels, scan.clusters, clusters, held_outside)
    timings["cluster_s"] = time.perf_counter() - started

    started = time.perf_counter()
    chosen = projection or ("umap" if _umap_available() else "pca")
    coords = _project(vectors, chosen, report)
    timings["map_s"] = time.perf_counter() - started

    started = time.perf_counter()
    written = _write_back(store, scan, labels, report) if write else 0
    timings["write_s"] = time.perf_counter() - started

    stats |= {"k": len(centroids), "projection": chosen, "written": written}
    stats |= {"noise": int((labels == UNASSIGNED_CLUSTER).sum())} if method == "density" else {}
    stats |= {name: round(seconds, 3) for name, seconds in timings.items()}
    points = [
        MapPoint(i, p, float(x), float(y), int(c), float(s))
        for i, p, (x, y), c, s in zip(scan.ids, scan.paths, coords, labels, scores, strict=True)
    ]
    return ClusterReport(clusters, points, stats)


# -- reading ------------------------------------------------------------------------------------


def _pull(store: VectorStore, where: str, report: Progress) -> VectorScan:
    """Id, path, stored cluster and CLIP vector (normalised in place) of every matching row, in
    one bulk read (:meth:`VectorStore.scan_vectors`)."""
    if not store.has_clip:
        raise QueryError(
            f"collection {store.collection!r} is hash-only (no CLIP vectors): clustering needs "
            "CLIP embeddings; ingest with a CLIP model (LOOKALIKE_CLIP_MODEL)"
        )
    report("pull", 0.0)
    scan = store.scan_vectors(where)
    report("pull", 1.0)
    if not len(scan.ids):
        raise QueryError(f"no stored image matches {where or 'the collection'}: nothing to cluster")
    normalise_in_place(scan.clip)
    return scan


# -- clustering ---------------------------------------------------------------------------------


def _kmeans(
    vectors: Matrix,
    k: int | None,
    stored: Labels,
    stats: dict[str, int | float | str],
    report: Progress,
) -> tuple[Labels, Matrix]:
    rows = len(vectors)
    if k is None:
        k = _auto_k(vectors, stats, report)
    if not 1 <= k <= rows:
        raise QueryError(f"k={k} clusters for {rows} images: choose k in 1..{rows}")
    report("cluster", 0.5)
    start = _stored_centroids(vectors, stored, k)
    stats["warm_start"] = start is not None
    labels = fit_kmeans(vectors, k, start)
    report("cluster", 1.0)
    return labels, _centroids(vectors, labels, k)


def fit_kmeans(vectors: Matrix, k: int, start: Matrix | None = None) -> Labels:
    """Each unit row's cluster among ``k`` (mini-batch k-means, seeded), from the centroids
    ``start`` when given, else from k-means++ (what a run with no stored clusters fits)."""
    from sklearn.cluster import MiniBatchKMeans

    # Ten k-means++ seedings (on a subsample, cheap): one is rarely enough to split every cluster.
    # Stored clusters of the same k are one seeding that already splits them, and keeps them.
    init: Any = "k-means++" if start is None else start
    model = MiniBatchKMeans(
        n_clusters=k,
        init=init,
        random_state=_SEED,
        batch_size=4096,
        n_init=10 if start is None else 1,
        max_no_improvement=20,
    ).fit(vectors)
    return np.asarray(model.predict(vectors), dtype=np.int64)


def _stored_centroids(vectors: Matrix, stored: Labels, k: int) -> Matrix | None:
    """The centroids of the stored clusters, where the rows hold exactly ``k`` of them and at
    least half the rows have one (a start that fits the rows); else None."""
    assigned = stored >= 0
    if assigned.sum() * 2 < len(stored):
        return None
    ids, compact = np.unique(stored[assigned], return_inverse=True)
    if len(ids) != k:
        return None
    labels = np.full(len(stored), UNASSIGNED_CLUSTER, dtype=np.int64)
    labels[assigned] = compact
    return _centroids(vectors, labels, k)


def _auto_k(vectors: Matrix, stats: dict[str, int | float | str], report: Progress) -> int:
    """The k in 2..30 with the best silhouette (cosine) of k-means on a sample of at most 4,000
    rows reduced to 50-d by PCA (a tenth of the cost at CLIP's 512-d, same ranking of k)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    sample = _pca(vectors[_sample(len(vectors), AUTO_K_SAMPLE)], DENSITY_DIMS)
    low, high = AUTO_K_RANGE[0], min(AUTO_K_RANGE[1], len(sample) - 1)
    if high < low:
        raise QueryError(f"--auto needs at least {low + 1} images, found {len(vectors)}")
    best_k, best_score = low, -2.0
    for k in range(low, high + 1):
        labels = KMeans(n_clusters=k, random_state=_SEED, n_init=2).fit_predict(sample)
        score = float(silhouette_score(sample, labels, metric="cosine"))
        if score > best_score:
            best_k, best_score = k, score
        report("cluster", 0.5 * (k - low + 1) / (high - low + 1))
    stats |= {"auto_k": best_k, "silhouette": round(best_score, 4)}
    return best_k


def _density(
    vectors: Matrix,
    min_cluster_size: int | None,
    stats: dict[str, int | float | str],
    report: Progress,
) -> tuple[Labels, Matrix]:
    from sklearn.cluster import HDBSCAN

    reduced = _pca(vectors, DENSITY_DIMS)
    fitted = _sample(len(vectors), DENSITY_SAMPLE)
    size = min_cluster_size or max(5, len(fitted) // 200)
    report("cluster", 0.1)
    sample_labels = HDBSCAN(
        min_cluster_size=size, min_samples=min(size, 10), copy=False
    ).fit_predict(reduced[fitted])
    report("cluster", 0.8)
    labels = np.full(len(vectors), UNASSIGNED_CLUSTER, dtype=np.int64)
    labels[fitted] = sample_labels
    rest = np.setdiff1d(np.arange(len(vectors)), fitted)
    if len(rest):
        nearest, _ = _nearest(reduced[rest], reduced[fitted], 1)
        labels[rest] = sample_labels[nearest[:, 0]]
    stats["min_cluster_size"] = size
    count = int(labels.max()) + 1
    report("cluster", 1.0)
    return labels, _centroids(vectors, labels, count)


def _centroids(vectors: Matrix, labels: Labels, count: int) -> Matrix:
    """Unit mean direction of each cluster's members."""
    sums = np.zeros((count, vectors.shape[1]), dtype=np.float64)
    members = labels >= 0
    np.add.at(sums, labels[members], vectors[members])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.asarray(sums / np.maximum(norms, 1e-12), dtype=np.float32)


def _centroid_distances(vectors: Matrix, labels: Labels, centroids: Matrix) -> Matrix:
    """Cosine distance of each row to its centroid (noise: to the nearest centroid)."""
    distances = np.zeros(len(vectors), dtype=np.float32)
    if len(centroids) == 0:
        return distances
    for start in range(0, len(vectors), _CHUNK):
        block = vectors[start : start + _CHUNK]
        own = labels[start : start + _CHUNK]
        cosines = block @ centroids.T
        nearest = cosines.max(axis=1)
        mine = cosines[np.arange(len(block)), np.maximum(own, 0)]
        distances[start : start + _CHUNK] = 1.0 - np.where(own >= 0, mine, nearest)
    return distances


def _outlier_scores(distances: Matrix, labels: Labels, count: int) -> Matrix:
    """Distance to centroid as a z-score among the cluster's members (noise: 0, never typical
    enough to rank; see ``cluster`` -1 instead)."""
    scores = np.zeros(len(distances), dtype=np.float32)
    for cluster in range(count):
        members = labels == cluster
        own = distances[members]
        spread = float(own.std())
        scores[members] = (own - own.mean()) / spread if spread > 0 else 0.0
    return scores


def keep_cluster_ids(
    labels: Labels, stored: Labels, reserved: Collection[int] = frozenset()
) -> Labels:
    """The id each cluster of ``labels`` (0..max) takes to keep the ids in ``stored``: that of
    the stored cluster it shares the most rows with, one to one (the assignment that keeps the
    most rows' ids); a cluster that shares none takes the smallest id that no other took and
    that is not ``reserved``."""
    count = int(labels.max()) + 1 if len(labels) else 0
    ids = np.full(count, -1, dtype=np.int64)
    both = (labels >= 0) & (stored >= 0)
    if both.any():
        from scipy.optimize import linear_sum_assignment

        old_ids, old = np.unique(stored[both], return_inverse=True)
        shared = np.zeros((count, len(old_ids)), dtype=np.int64)
        np.add.at(shared, (labels[both], old), 1)
        rows, cols = linear_sum_assignment(shared, maximize=True)
        matched = shared[rows, cols] > 0
        ids[rows[matched]] = old_ids[cols[matched]]
    taken = set(ids[ids >= 0].tolist()) | set(reserved)
    free = (i for i in itertools.count() if i not in taken)
    for cluster in np.flatnonzero(ids < 0):
        ids[cluster] = next(free)
    return ids


def _held_outside(store: VectorStore, scan: VectorScan) -> frozenset[int]:
    """The cluster ids held by rows the scan did not read."""
    scanned = set(scan.ids)
    assigned = store.cluster_assignments()
    return frozenset(c for row, c in assigned.items() if row not in scanned)


def _keep_ids(
    labels: Labels, stored: Labels, clusters: list[ClusterInfo], reserved: Collection[int]
) -> tuple[Labels, list[ClusterInfo]]:
    """Labels and cluster infos under the ids :func:`keep_cluster_ids` keeps."""
    ids = keep_cluster_ids(labels, stored, reserved)
    if not len(ids):  # every row is noise
        return labels, clusters
    kept = np.where(labels >= 0, ids[np.maximum(labels, 0)], labels)
    infos = [replace(info, id=int(ids[info.id])) for info in clusters]
    return kept, sorted(infos, key=lambda info: (-info.size, info.id))


def _cluster_infos(
    scan: VectorScan, labels: Labels, distances: Matrix, count: int
) -> list[ClusterInfo]:
    infos = []
    for cluster in range(count):
        members = np.flatnonzero(labels == cluster)
        if not len(members):
            continue
        central = members[np.argsort(distances[members], kind="stable")[:REPRESENTATIVES]]
        infos.append(
            ClusterInfo(
                cluster,
                len(members),
                tuple((scan.ids[i], scan.paths[i]) for i in central),
                float(distances[members].mean()),
            )
        )
    return sorted(infos, key=lambda info: (-info.size, info.id))


# -- the 2-D map --------------------------------------------------------------------------------


def _umap_available() -> bool:
    try:
        _import_umap()
    except ImportError:
        return False
    return True


def _import_umap() -> Any:
    with warnings.catch_warnings():
        # umap warns at import that TensorFlow (for ParametricUMAP, unused here) is missing.
        warnings.simplefilter("ignore")
        import umap
    return umap


def _project(vectors: Matrix, projection: Projection, report: Progress) -> Matrix:
    """(N, 2) map coordinates. UMAP is fitted on a sample of at most 5,000 rows (its cost grows
    fast past that); the other rows sit at the similarity-weighted mean of their 10 nearest
    sampled rows, which is also how UMAP initialises new points."""
    report("map", 0.0)
    if projection == "pca" or len(vectors) < 3:
        coords = _pca(vectors, 2)
        report("map", 1.0)
        return coords
    umap = _import_umap()
    reduced = _pca(vectors, DENSITY_DIMS)
    fitted = _sample(len(vectors), UMAP_SAMPLE)
    model = umap.UMAP(
        n_components=2, n_neighbors=min(15, len(fitted) - 1), random_state=_SEED, init="random"
    )
    with warnings.catch_warnings():
        # "n_jobs overridden by setting random_state": determinism is the point.
        warnings.simplefilter("ignore", UserWarning)
        anchor = np.asarray(model.fit_transform(reduced[fitted]), dtype=np.float32)
    report("map", 0.7)
    coords = np.zeros((len(vectors), 2), dtype=np.float32)
    coords[fitted] = anchor
    rest = np.setdiff1d(np.arange(len(vectors)), fitted)
    if len(rest):
        neighbours = min(UMAP_NEIGHBOURS, len(fitted))
        for start in range(0, len(rest), _CHUNK):
            rows = rest[start : start + _CHUNK]
            nearest, distances = _nearest(reduced[rows], reduced[fitted], neighbours)
            weights = 1.0 / (distances + 1e-6)
            weights /= weights.sum(axis=1, keepdims=True)
            coords[rows] = (anchor[nearest] * weights[..., None]).sum(axis=1)
    report("map", 1.0)
    return coords


def _pca(vectors: Matrix, dims: int) -> Matrix:
    from sklearn.decomposition import PCA

    dims = min(dims, vectors.shape[1], len(vectors))
    if dims >= vectors.shape[1]:
        return vectors
    return np.asarray(PCA(n_components=dims, random_state=_SEED).fit_transform(vectors), np.float32)


def _nearest(queries: Matrix, base: Matrix, count: int) -> tuple[Labels, Matrix]:
    """Indices of the ``count`` rows of ``base`` nearest to each query (Euclidean), nearest
    first, and their distances."""
    base_sq = (base * base).sum(axis=1)
    nearest = np.empty((len(queries), count), dtype=np.int64)
    distances = np.empty((len(queries), count), dtype=np.float32)
    for start in range(0, len(queries), _CHUNK):
        block = queries[start : start + _CHUNK]
        squared = base_sq[None, :] - 2.0 * (block @ base.T) + (block * block).sum(axis=1)[:, None]
        if count < len(base):
            top = np.argpartition(squared, count - 1, axis=1)[:, :count]
        else:
            top = np.tile(np.arange(len(base)), (len(block), 1))
        order = np.take_along_axis(squared, top, axis=1).argsort(axis=1)
        top = np.take_along_axis(top, order, axis=1)
        nearest[start : start + _CHUNK] = top
        distances[start : start + _CHUNK] = np.sqrt(
            np.maximum(np.take_along_axis(squared, top, axis=1), 0.0)
        )
    return nearest, distances


def _sample(rows: int, limit: int) -> npt.NDArray[np.int64]:
    """At most ``limit`` sorted row indices, the same for the same ``rows``."""
    if rows <= limit:
        return np.arange(rows, dtype=np.int64)
    chosen = np.random.default_rng(_SEED).choice(rows, size=limit, replace=False)
    return np.sort(chosen).astype(np.int64)


# -- writing back -------------------------------------------------------------------------------


def _write_back(store: VectorStore, scan: VectorScan, labels: Labels, report: Progress) -> int:
    """Rewrite the rows whose cluster changed; returns how many. Milvus Lite 2.5 rejects a
    partial update, so each changed row is read by id, in batches, without its vector (the scan
    holds it: a unit vector normalised again keeps its bits, or moves by a unit in the last
    place), and written back whole; a row deleted meanwhile is left deleted."""
    changed = np.flatnonzero(scan.clusters != labels)
    report("write", 0.0)
    written = 0
    for start in range(0, len(changed), WRITE_BATCH):
        rows = {scan.ids[int(row)]: int(row) for row in changed[start : start + WRITE_BATCH]}
        stored = store.get(list(rows), with_vectors=False)
        store.replace(
            [
                replace(
                    record, cluster=int(labels[rows[record.id]]), clip=scan.clip[rows[record.id]]
                )
                for record in stored
            ]
        )
        written += len(stored)
        report("write", min((start + WRITE_BATCH) / len(changed), 1.0))
    report("write", 1.0)
    log.info("wrote cluster ids of %d of %d rows", written, len(scan.ids))
    return written
