"""CLIP dedup and clusters when ingestion has kept the vectors (the vector cache written by the
workers), as the collection grows.

The same synthetic collections as ``bench.bulk_read`` (kept under ``--home``). Per size: a
vector cache is filled as workers fill it, one chunk per ingest batch of 128 rows
(``services.vector_cache.append_chunk``, what ``MilvusStore.upsert`` calls after each insert),
from the vectors the collection was built with; then, through a store that keeps that cache (as
the CLI's and the UI's do), timed with their peak RSS: ``find_duplicates`` with CLIP pairs (the
first run after the ingest, which also compacts the cache's chunks), the next run, and
``cluster_collection`` by stage (the write-back only up to ``--write-max`` rows; above, the
clusters are computed and not written). The dedup's groups are checked against a run without a
cache, up to ``--check-max`` rows.

    python -m bench.ingest_cache --home /work/benchdb/bulk
    python -m bench.ingest_cache --n 2000 --no-write          # smoke run
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench import _report, _synthetic
from bench.bulk_read import MIN_COSINE, peak_rss
from services.clusters import cluster_collection
from services.dedup import DedupOptions, find_duplicates
from services.store import MilvusStore


def fill_like_workers(store: MilvusStore, n: int) -> int:
    """Append the collection's vectors to ``store``'s cache in ingest-batch chunks; the chunks."""
    cache = store.vector_cache()
    assert cache is not None
    cache.clear()
    matrix, _ = _synthetic.vectors(n)
    return _synthetic.cache_like_workers(cache, matrix, 0, n)


def measure(store: MilvusStore, n: int, *, write: bool, check: bool) -> dict[str, float]:
    out: dict[str, float] = {"n": n, "written": float(write)}
    options = DedupOptions(min_cosine=MIN_COSINE)
    with tempfile.TemporaryDirectory(prefix="vectors_") as folder:
        cached = MilvusStore.connect(
            store.uri, store.collection, store.contract, timeout=600.0, vector_cache=Path(folder)
        )
        try:
            out["chunks"] = fill_like_workers(cached, n)
            for run in ("first", "next"):
                report, out[f"dedup_{run}_s"], out[f"dedup_{run}_gib"] = peak_rss(
                    lambda: find_duplicates(cached, [], options)
                )
                assert report.stats["vectors_from_cache"] == n, report.stats
                out["groups"] = report.stats["groups"]
            cache = cached.vector_cache()
            assert cache is not None
            out["chunks_after"] = cache.chunks
            if check:
                plain = find_duplicates(store, [], options)
                assert plain.stats["groups"] == out["groups"], (plain.stats, out["groups"])
            found, out["clusters_s"], out["clusters_gib"] = peak_rss(
                lambda: cluster_collection(
                    cached, k=_synthetic.CLUSTERS, projection="pca", write=write
                )
            )
            for stage in ("pull_s", "cluster_s", "map_s", "write_s", "written"):
                out[f"clusters_{stage}"] = float(found.stats[stage])
        finally:
            cached.close()
    return out


def table(results: list[dict[str, float]]) -> str:
    header = [
        "rows",
        "cache as ingested (chunks)",
        "CLIP dedup, first run after ingest (peak RSS)",
        "next run (peak RSS)",
        "chunks after",
        "clusters: pull / cluster / map / write-back = total (peak RSS)",
    ]
    rows = []
    for r in results:
        write = (
            f"{r['clusters_write_s']:.1f} ({int(r['clusters_written']):,} rows changed)"
            if r["written"]
            else "not written"
        )
        rows.append(
            [
                f"{int(r['n']):,}",
                f"{int(r['chunks']):,}",
                f"{r['dedup_first_s']:.1f} s ({r['dedup_first_gib']:.2f} GiB)",
                f"{r['dedup_next_s']:.1f} s ({r['dedup_next_gib']:.2f} GiB)",
                f"{int(r['chunks_after']):,}",
                f"{r['clusters_pull_s']:.1f} / {r['clusters_cluster_s']:.1f} / "
                f"{r['clusters_map_s']:.1f} / {write} = {r['clusters_s']:.1f} s "
                f"({r['clusters_gib']:.2f} GiB)",
            ]
        )
    return _report.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--home", type=Path, help="Milvus Lite data folder, kept")
    parser.add_argument(
        "--write-max", type=int, default=100_000, help="largest size whose clusters are written"
    )
    parser.add_argument(
        "--check-max", type=int, default=100_000, help="largest size checked without a cache"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    results = _synthetic.measure_each(
        args.home,
        args.n,
        lambda store, n: measure(store, n, write=n <= args.write_max, check=n <= args.check_max),
    )
    body = (
        f"Synthetic 512-d vectors (`bench._synthetic`), CLIP pairs at cosine >= {MIN_COSINE}, "
        f"the cache filled in chunks of {_synthetic.INGEST_BATCH} rows as workers fill it. Load "
        f"average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 cores).\n\n"
        + table(results)
    )
    print(body)
    if not args.no_write:
        _report.write_section(
            "ingest_cache",
            "CLIP dedup and clusters from the vectors ingestion kept",
            body,
            packages=["pymilvus", "milvus-lite", "numpy", "faiss-cpu", "scikit-learn"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
