"""What a clustering run rewrites after the collection grows: kept cluster ids against new ones.

    python -m bench.clusters_growth                      # 10k, 100k and 1M images, +1%
    python -m bench.clusters_growth --n 2000 --no-write  # smoke run

Each size: ``n`` synthetic rows (``bench._synthetic``: planted centres, 10% near-copies) in a
Milvus Lite server started on a free port in a temporary folder, read through a store that keeps
a vector cache filled as workers fill it (the embedded default). Up to ``--first-max`` rows the
collection is clustered (k-means, the planted k, PCA map) and written back, timed; above, the
rows are stored with the clusters of a fresh fit computed in memory (what a first run computes;
its write-back of every row is what ``bench.clusters_speed`` and docs/benchmarks.md measure).
Then ``--grow`` more rows of the same centres are stored as ingestion stores them and the
collection is clustered again. "before" is what that second run wrote before runs kept the stored
ids: the rows whose stored cluster differs from a fresh fit's labels (k-means++ with ten
seedings, as that code fitted), at the first run's measured write-back rate where there was one
(a projection, said so in the table). Last, the write-back's cost per row, read by id with the
vector (before) and without it (now), each then upserted, on 5 batches of 1,000 rows.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import _report, _synthetic
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.clip_join import normalise_in_place
from services.clusters import cluster_collection, fit_kmeans
from services.schema import SchemaContract
from services.store import MilvusStore

DIM = _synthetic.DIM
Matrix = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
SAMPLE_BATCHES = 5
BATCH = 1000


def fresh_labels(store: MilvusStore, k: int) -> tuple[Labels, Labels]:
    """Stored clusters and a fresh fit's labels of every row, in the scan's order."""
    scan = store.scan_vectors("")
    return scan.clusters, fit_kmeans(normalise_in_place(scan.clip), k)


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


def stored_rows(
    store: MilvusStore, matrix: Matrix, start: int, stop: int, labels: Labels | None
) -> None:
    """Insert rows ``start:stop`` with ``labels`` as their clusters (None: unassigned), and
    append their vectors to the store's cache as workers do."""
    cache = store.vector_cache()
    assert cache is not None
    _synthetic.insert(store, matrix, start, stop, labels)
    _synthetic.cache_like_workers(cache, matrix, start, stop)


def run_size(uri: str, n: int, grow: int, k: int, first_max: int, cache_root: Path) -> list[object]:
    matrix, _ = _synthetic.vectors(n + grow, k)
    contract = SchemaContract.current("bench", DIM)
    store = MilvusStore.connect(
        uri, f"bench_growth_{n}", contract, timeout=600.0, vector_cache=cache_root
    )
    try:
        if n <= first_max:
            stored_rows(store, matrix, 0, n, None)
            first = cluster_collection(store, k=k, projection="pca").stats
            rate: float | None = float(first["write_s"]) / max(int(first["written"]), 1)
            first_cell = f"{first['written']:,} in {first['write_s']:.1f} s"
        else:
            stored_rows(store, matrix, 0, n, fit_kmeans(normalise_in_place(matrix[:n].copy()), k))
            rate, first_cell = None, f"not run (stored with a fit's {k} clusters)"
        store.upsert(_synthetic.records(matrix, n, n + grow))
        stored, fresh = fresh_labels(store, k)
        before = int((stored != fresh).sum())
        second = cluster_collection(store, k=k, projection="pca").stats
        print(f"{n:,}: second {second}", flush=True)
        sample = [_synthetic.content_id(i) for i in range(BATCH * SAMPLE_BATCHES)]
        cost_before, cost_now = write_cost(store, sample, True), write_cost(store, sample, False)
        # Seconds a row the old write-back took: the first run's where it ran, else the sample's.
        old_rate = rate if rate is not None else cost_before / 1000
        stages = (second[name] for name in ("pull_s", "cluster_s", "map_s", "write_s"))
        return [
            f"{n:,}",
            f"{grow:,}",
            first_cell,
            f"{before:,} in ~{before * old_rate:.1f} s (projected)",
            f"{second['written']:,} in {second['write_s']:.1f} s",
            " / ".join(f"{float(seconds):.1f}" for seconds in stages),
            f"{cost_before:.2f}",
            f"{cost_now:.2f}",
        ]
    finally:
        store.drop()
        store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="row counts"
    )
    parser.add_argument(
        "--first-max", type=int, default=100_000, help="largest size whose first run is timed"
    )
    parser.add_argument("--grow", type=float, default=0.01, help="rows added, a share of n")
    parser.add_argument(
        "--clusters", type=int, default=_synthetic.CLUSTERS, help="planted clusters, the k fitted"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)

    header = [
        "images",
        "added",
        "first run writes",
        "second run before: writes",
        "second run now: writes",
        "second run now: pull / cluster / map / write-back s",
        "write-back ms a row, before (read with vector)",
        "now (vector from the scan)",
    ]
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory() as home, EmbeddedMilvus(Path(home), free_port()) as server:
        for n in args.n:
            grow = max(1, round(n * args.grow))
            cache = Path(home) / "vectors"
            rows.append(run_size(server.uri, n, grow, args.clusters, args.first_max, cache))
    body = (
        f"Synthetic 512-d vectors (`bench._synthetic`), {args.clusters} planted centres, k-means "
        f"k={args.clusters}, PCA map, vectors from the cache workers fill; the second run after "
        f"{args.grow:.0%} more rows of the same centres.\n\n" + _report.markdown_table(header, rows)
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
