"""Clustering CLIP vectors stored in Milvus Lite: ``services.clusters`` end to end.

    python -m bench.clusters_speed                       # 10k and 100k images
    python -m bench.clusters_speed --n 2000 --no-write   # smoke run

Synthetic 512-d unit vectors around ``--clusters`` random centres (random directions in 512-d
are nearly orthogonal; each member's cosine to its centre is about 0.75), stored in a Milvus Lite
server started on a free port in a temporary folder. Timed per stage as ``cluster_collection``
reports them: pull (read every row with its vector), cluster (k-means with the planted k), map
(UMAP on a 5,000-row sample when umap-learn is installed, else PCA) and write-back of the cluster
ids. Then, without writing, k-means with ``--auto`` k and the density option (HDBSCAN), each
including its own pull. ARI: adjusted Rand index against the planted clusters (HDBSCAN: over
the rows it did not call noise).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.metrics import adjusted_rand_score

from bench import _report
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.clusters import ClusterReport, Method, cluster_collection
from services.records import ImageRecord
from services.schema import SchemaContract
from services.store import MilvusStore

DIM = 512
INSERT_BATCH = 1000


def planted(n: int, clusters: int, seed: int = 0) -> tuple[npt.NDArray[np.float32], np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, clusters, size=n)
    vectors = centres[truth] + rng.normal(scale=0.9 / np.sqrt(DIM), size=(n, DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), truth


def fill(store: MilvusStore, vectors: npt.NDArray[np.float32]) -> float:
    """Write one row per vector; returns the seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(1)
    for start in range(0, len(vectors), INSERT_BATCH):
        batch = [
            ImageRecord(
                id=hashlib.sha256(str(i).encode()).hexdigest(),
                path=f"/photos/{i:06d}.jpg",
                phash=rng.integers(0, 256, 8, dtype=np.uint8).tobytes(),
                width=640,
                height=480,
                format="JPEG",
                bytes=100_000,
                clip=vectors[i],
            )
            for i in range(start, min(start + INSERT_BATCH, len(vectors)))
        ]
        store.replace(batch)
    return time.perf_counter() - started


def ari(report: ClusterReport, order: dict[str, int], truth: np.ndarray) -> float:
    labels = np.full(len(truth), -1)
    for point in report.points:
        labels[order[point.id]] = point.cluster
    kept = labels >= 0
    return float(adjusted_rand_score(truth[kept], labels[kept]))


def run_size(uri: str, n: int, clusters: int, extras: bool, projection: str) -> list[list[object]]:
    vectors, truth = planted(n, clusters)
    store = MilvusStore.connect(uri, f"bench_clusters_{n}", SchemaContract.current("bench", DIM))
    rows: list[list[object]] = []
    try:
        insert_s = fill(store, vectors)
        order = {hashlib.sha256(str(i).encode()).hexdigest(): i for i in range(n)}
        print(f"{n:,} rows inserted in {insert_s:.1f} s", flush=True)
        runs: list[tuple[str, int | None, Method, bool]] = [
            (f"k-means k={clusters}", clusters, "kmeans", True)
        ]
        if extras:
            runs += [("k-means --auto", None, "kmeans", False), ("density", None, "density", False)]
        for label, k, method, write in runs:
            started = time.perf_counter()
            report = cluster_collection(
                store,
                k=k,
                method=method,
                write=write,
                projection="pca" if projection == "pca" or not write else None,
            )
            total = time.perf_counter() - started
            stats = report.stats
            row = [
                f"{n:,}",
                label,
                stats["pull_s"],
                stats["cluster_s"],
                f"{stats['map_s']} ({stats['projection']})",
                stats["write_s"] if write else "-",
                f"{total:.1f}",
                stats["k"],
                f"{ari(report, order, truth):.3f}",
            ]
            print(" | ".join(str(cell) for cell in row), flush=True)
            rows.append(row)
    finally:
        store.drop()
        store.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="row counts")
    parser.add_argument(
        "--clusters", type=int, default=20, help="planted clusters (--auto tries 2..30)"
    )
    parser.add_argument(
        "--projection",
        choices=["auto", "pca"],
        default="auto",
        help="the map of the k-means run: UMAP when installed (auto), or PCA",
    )
    parser.add_argument("--no-extras", action="store_true", help="k-means with the planted k only")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)

    header = [
        "images",
        "run",
        "pull s",
        "cluster s",
        "map s",
        "write-back s",
        "total s",
        "k",
        "ARI",
    ]
    print(" | ".join(header))
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as home:
        server = EmbeddedMilvus(Path(home), free_port())
        with server:
            for n in args.n:
                rows += run_size(server.uri, n, args.clusters, not args.no_extras, args.projection)
    body = f"{args.clusters} planted centres.\n\n" + _report.markdown_table(header, rows)
    print(body)
    if args.no_write:
        return 0
    _report.write_section(
        "clusters_speed",
        "Clustering CLIP vectors",
        body,
        packages=["scikit-learn", "umap-learn", "numpy", "pymilvus", "milvus-lite"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
