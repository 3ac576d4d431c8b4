"""Bulk reads, CLIP dedup and clusters as the collection grows: the old read path against the new.

    python -m bench.bulk_read --n 10000 100000 --home /tmp/lookalike-scale   # keeps the data
    python -m bench.bulk_read --n 2000 --no-write                           # smoke run

One synthetic collection per size (bench._synthetic: planted clusters and 10% near-copies),
built once in a Milvus Lite server whose data stays under ``--home`` and reused by every
measurement of the run (and by later runs). Per size, side by side:

- read: every row's id and 512-d vector. Old: the query iterator, rows decoded by pymilvus
  (``iterate(with_vectors=True, light=True)``); new: ``scan_vectors`` (key ranges, parallel
  keyset pages, vectors decoded per page). Raw: undecoded ``client.query`` pages of the new
  read's size, one from the start of each key range (Milvus Lite scans from the first key to
  the page), the server and transport bound per row.
- dedup: ``find_duplicates`` with CLIP pairs (cosine >= 0.95) end to end, with the process's
  peak RSS; old: the old read plus ``near_links`` on its records, both timed in this run.
- dedup with a vector cache (``services.vector_cache``, as the CLI and UI keep one): its first
  run (the read above, then the cache written) and the next (hashes read without vectors,
  vectors from the cache, which the first run left in the page cache).
- clusters: ``cluster_collection`` (k-means, planted k, write-back) by stage.

Rows above ``--old-max`` are not read the old way (minutes per 100,000 rows); their old figures
are projections from the largest measured rate, marked as such.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import psutil

from bench import _report, _synthetic
from services.clusters import cluster_collection
from services.dedup import DedupOptions, find_duplicates, near_links
from services.store import BULK_KEY_CUTS, MilvusStore

T = TypeVar("T")
MIN_COSINE = 0.95
IMG = Path(__file__).resolve().parent.parent / "docs" / "img" / "bulk_read.png"


def peak_rss(call: Callable[[], T]) -> tuple[T, float, float]:
    """``call()``, its seconds and the process's peak RSS (GiB) while it ran (sampled)."""
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.05)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        result = call()
    finally:
        seconds = time.perf_counter() - started
        done.set()
        watcher.join()
    return result, seconds, max(peak[0], process.memory_info().rss) / 2**30


def raw_page(store: MilvusStore, tries: int = 2) -> float:
    """Seconds per row of undecoded ``client.query`` pages of ids and vectors as the bulk read
    asks for them (its page size, in key order): one page from the start of each of its 16 key
    ranges, so that Milvus Lite's scan from the first key to the page is paid as on average
    in a read; the best of ``tries`` rounds after a warm-up page."""
    rows = store.bulk_page_rows(["id", "clip"])
    best = float("inf")
    store.client.query(store.collection, filter='id >= ""', output_fields=["id"], limit=1)
    for _ in range(tries):
        started, read = time.perf_counter(), 0
        for cut in ("", *BULK_KEY_CUTS):
            read += len(_synthetic.key_page(store, cut, rows, ["id", "clip"]))
        best = min(best, (time.perf_counter() - started) / max(read, 1))
    return best


def measure(store: MilvusStore, n: int, old: bool, clusters: bool) -> dict[str, float]:
    out: dict[str, float] = {"n": n, "raw_row_ms": 1000 * raw_page(store)}
    scan, out["read_new_s"], _ = peak_rss(store.scan_vectors)
    assert len(scan.ids) == n, (len(scan.ids), n)
    del scan
    if old:
        records, out["read_old_s"], _ = peak_rss(
            lambda: list(store.iterate("", with_vectors=True, light=True, batch_size=1000))
        )
        _, out["join_old_s"], out["dedup_old_gib"] = peak_rss(
            lambda: near_links(records, 8, MIN_COSINE)
        )
        out["dedup_old_s"] = out["read_old_s"] + out["join_old_s"]
        del records
    options = DedupOptions(min_cosine=MIN_COSINE)
    report, out["dedup_new_s"], out["dedup_new_gib"] = peak_rss(
        lambda: find_duplicates(store, [], options)
    )
    out["groups"] = report.stats["groups"]
    # The same dedup through a store that keeps a vector cache (services.vector_cache), as
    # the CLI's and the UI's do: the first run reads as above and writes the cache, the next
    # reads the hashes without vectors and the vectors from the cache (page cache warm).
    with tempfile.TemporaryDirectory(prefix="vectors_") as folder:
        cached = MilvusStore.connect(
            store.uri, store.collection, store.contract, timeout=600.0, vector_cache=Path(folder)
        )
        try:
            for run in ("first", "next"):
                again, out[f"cache_{run}_s"], out[f"cache_{run}_gib"] = peak_rss(
                    lambda: find_duplicates(cached, [], options)
                )
                assert again.stats["groups"] == out["groups"], (again.stats, out["groups"])
        finally:
            cached.close()
    if clusters:
        found, out["clusters_s"], out["clusters_gib"] = peak_rss(
            lambda: cluster_collection(store, k=_synthetic.CLUSTERS, projection="pca")
        )
        for stage in ("pull_s", "cluster_s", "map_s", "write_s"):
            out[f"clusters_{stage}"] = float(found.stats[stage])
    return out


def plot(results: list[dict[str, float]], load: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = np.array([r["n"] for r in results])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (("read_old_s", "read, old"), ("read_new_s", "read, new")):
        known = [(r["n"], r[key]) for r in results if key in r]
        if known:
            left.plot(*zip(*known, strict=True), "o-", label=label)
    for key, label in (
        ("dedup_old_s", "CLIP dedup, old"),
        ("dedup_new_s", "CLIP dedup, new"),
        ("clusters_s", "clusters, new"),
    ):
        known = [(r["n"], r[key]) for r in results if key in r]
        if known:
            left.plot(*zip(*known, strict=True), "s--", label=label)
    left.set(xscale="log", yscale="log", xlabel="rows", ylabel="seconds", title="Time")
    left.legend()
    for key, label in (("read_old_s", "old"), ("read_new_s", "new")):
        known = [(r["n"], r["n"] / r[key]) for r in results if key in r]
        if known:
            right.plot(*zip(*known, strict=True), "o-", label=label)
    right.plot(sizes, [1000 / r["raw_row_ms"] for r in results], "k:", label="raw query bound")
    right.set(xscale="log", xlabel="rows", ylabel="rows/s", title="Bulk read rate (512-d)")
    right.legend()
    fig.suptitle(f"Milvus Lite, {_report.machine_line()}, {load}", fontsize=8)
    fig.tight_layout()
    IMG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG, dpi=110)


def table(results: list[dict[str, float]]) -> str:
    header = [
        "rows",
        "read old",
        "read new",
        "speed-up",
        "raw query bound",
        "dedup old",
        "dedup new (peak RSS)",
        "dedup new, vector cache: first run / next run (peak RSS)",
        "clusters new: pull / cluster / map / write-back = total",
    ]
    best_old = max((r for r in results if "read_old_s" in r), key=lambda r: r["n"], default=None)
    rows = []
    for r in results:
        n = r["n"]
        if "read_old_s" in r:
            read_old = f"{r['read_old_s']:.1f} s ({n / r['read_old_s']:,.0f}/s)"
            dedup_old = f"{r['dedup_old_s']:.1f} s ({r['dedup_old_gib']:.2f} GiB)"
            speed = f"{r['read_old_s'] / r['read_new_s']:.1f}x"
        elif best_old is not None:
            projected = n * best_old["read_old_s"] / best_old["n"]
            read_old = f">= {projected:.0f} s (linear projection; its scans grow too)"
            dedup_old, speed = "-", "-"
        else:
            read_old, dedup_old, speed = "-", "-", "-"
        rows.append(
            [
                f"{int(n):,}",
                read_old,
                f"{r['read_new_s']:.1f} s ({n / r['read_new_s']:,.0f}/s)",
                speed,
                f"{1000 / r['raw_row_ms']:,.0f}/s",
                dedup_old,
                f"{r['dedup_new_s']:.1f} s ({r['dedup_new_gib']:.2f} GiB)",
                f"{r['cache_first_s']:.1f} s ({r['cache_first_gib']:.2f} GiB) / "
                f"{r['cache_next_s']:.1f} s ({r['cache_next_gib']:.2f} GiB)",
                (
                    f"{r['clusters_pull_s']:.1f} / {r['clusters_cluster_s']:.1f} / "
                    f"{r['clusters_map_s']:.1f} / {r['clusters_write_s']:.1f} = "
                    f"{r['clusters_s']:.1f} s"
                )
                if "clusters_s" in r
                else "not run (--clusters-max)",
            ]
        )
    return _report.markdown_table(header, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--old-max", type=int, default=100_000, help="largest size read the old way"
    )
    parser.add_argument(
        "--home", type=Path, help="Milvus Lite data folder, kept (default: temporary)"
    )
    parser.add_argument(
        "--clusters-max", type=int, default=100_000, help="largest size clustered (write-back)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    results = _synthetic.measure_each(
        args.home,
        args.n,
        lambda store, n: measure(store, n, n <= args.old_max, n <= args.clusters_max),
    )
    body = (
        f"Synthetic 512-d vectors, {_synthetic.CLUSTERS} planted clusters, "
        f"{_synthetic.COPY_SHARE:.0%} near-copies; CLIP pairs at cosine >= {MIN_COSINE}. "
        f"Load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (2 "
        "cores; above 2, other work shared them).\n\n"
        + table(results)
        + "\n\n![growth curves](img/bulk_read.png)"
    )
    print(body)
    if args.no_write:
        return 0
    plot(results, f"load average {load_before:.1f} before")
    _report.write_section(
        "bulk_read",
        "Bulk reads, CLIP dedup and clusters as the collection grows",
        body,
        packages=["pymilvus", "milvus-lite", "numpy", "faiss-cpu", "scikit-learn"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
