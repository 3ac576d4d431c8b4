"""What a clustering run rewrites after the collection grows: kept cluster ids against new ones.

    python -m bench.clusters_growth                      # 10k and 100k images, +1%
    python -m bench.clusters_growth --n 2000 --no-write  # smoke run

Each size: ``n`` synthetic rows around planted centres (``bench.clusters_speed.planted``) in a
Milvus Lite server started on a free port in a temporary folder, clustered (k-means, the planted
k, PCA map) and written back; then ``--grow`` more rows of the same centres are stored and the
collection is clustered again. For each run: the rows written back and the write-back's seconds.
"before" is what the same second run wrote before runs kept the stored ids: the rows whose
stored cluster differs from a fresh fit's labels (k-means++ with ten seedings, as that code fit
them), and the seconds they take at the first run's measured write-back rate (a projection, said
so in the table). Then the write-back's cost per row, read by id with the vector (before) and
without it (now), each then upserted, on 5 batches of 1,000 rows.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.cluster import MiniBatchKMeans

from bench import _report
from bench.clusters_speed import fill, planted
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.clip_join import normalise_in_place
from services.clusters import cluster_collection
from services.schema import SchemaContract
from services.store import MilvusStore

DIM = 512
SAMPLE_BATCHES = 5
BATCH = 1000


def fresh_labels(store: MilvusStore, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored clusters and the labels of a fresh fit, as runs fitted before they kept ids."""
    scan = store.scan_vectors("")
    vectors = normalise_in_place(scan.clip)
    model = MiniBatchKMeans(
        n_clusters=k, random_state=0, batch_size=4096, n_init=10, max_no_improvement=20
    ).fit(vectors)
    return scan.clusters, model.predict(vectors)


def write_cost(store: MilvusStore, ids: list[str], with_vectors: bool) -> float:
    """Milliseconds a row to read ``SAMPLE_BATCHES`` batches of ``ids`` by id and upsert them
    unchanged; without vectors, each row takes its vector from memory, as the write-back takes
    it from its scan."""
    held = {r.id: r.clip for r in store.get(ids, with_vectors=True)}
    started = time.perf_counter()
    for batch in range(SAMPLE_BATCHES):
        records = store.get(ids[batch * BATCH : (batch + 1) * BATCH], with_vectors=with_vectors)
        store.replace(records if with_vectors else [replace(r, clip=held[r.id]) for r in records])
    return 1000 * (time.perf_counter() - started) / (SAMPLE_BATCHES * BATCH)


def run_size(uri: str, n: int, grow: int, k: int) -> list[object]:
    vectors, _ = planted(n + grow, k)
    store = MilvusStore.connect(uri, f"bench_growth_{n}", SchemaContract.current("bench", DIM))
    try:
        fill(store, vectors[:n])
        first = cluster_collection(store, k=k, projection="pca")
        rate = float(first.stats["write_s"]) / max(int(first.stats["written"]), 1)
        fill(store, vectors, first=n)
        stored, fresh = fresh_labels(store, k)
        before = int((stored != fresh).sum())
        second = cluster_collection(store, k=k, projection="pca")
        print(f"{n:,}: first {first.stats}, second {second.stats}", flush=True)
        sample = [
            hashlib.sha256(str(i).encode()).hexdigest() for i in range(BATCH * SAMPLE_BATCHES)
        ]
        return [
            f"{n:,}",
            f"{grow:,}",
            f"{first.stats['written']:,} in {first.stats['write_s']:.1f} s",
            f"{before:,} in ~{before * rate:.1f} s (projected)",
            f"{second.stats['written']:,} in {second.stats['write_s']:.1f} s",
            f"{write_cost(store, sample, True):.2f}",
            f"{write_cost(store, sample, False):.2f}",
        ]
    finally:
        store.drop()
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000], help="row counts")
    parser.add_argument("--grow", type=float, default=0.01, help="rows added, a share of n")
    parser.add_argument("--clusters", type=int, default=20, help="planted clusters, the k fitted")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)

    header = [
        "images",
        "added",
        "first run writes",
        "second run before: writes",
        "second run now: writes",
        "write-back ms a row, before (read with vector)",
        "now (vector from the scan)",
    ]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as home, EmbeddedMilvus(Path(home), free_port()) as server:
        for n in args.n:
            rows.append(run_size(server.uri, n, max(1, round(n * args.grow)), args.clusters))
    body = (
        f"{args.clusters} planted centres, k-means k={args.clusters}, PCA map; the second run "
        f"after {args.grow:.0%} more rows of the same centres.\n\n"
        + _report.markdown_table(header, rows)
    )
    print(body)
    if args.no_write:
        return 0
    _report.write_section(
        "clusters_growth",
        "Clustering again after the collection grows",
        body,
        packages=["scikit-learn", "numpy", "pymilvus", "milvus-lite"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
