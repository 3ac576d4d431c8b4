"""What the patch codes cost dedup on arrival: a worker's index of N stored rows
(``services.code_index.StoredCodes``) with and without their patch codes, in memory, load time
and time to match a batch of arrivals.

    python -m bench.patch_arrival                       # 100,000 and 1,000,000 rows
    python -m bench.patch_arrival --rows 20000 --no-write

Each (size, with or without patches) runs in a fresh process, so its memory is its own: N stored
rows of a random pHash and 16 random patch codes (as bench.patch_join draws them) are loaded as a
worker loads them from Milvus (one add of every row), then batches of 128 arrivals (generated
photos, their signals computed as ingestion computes them) are matched against them, and each
of them alone by its patch codes (what the UI's search adds to its Hamming stage). Random
codes seldom meet, so this is the cost of the index, not of verifying many candidates. Memory
is counted twice: the bytes the index keeps allocated (tracemalloc, over a second load), and
how much the process's resident memory grew over the first (which also holds what the loading
freed but the allocator kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from bench import _report
from bench.patch_join import _texts
from services.code_index import StoredCodes, phash_kind
from services.patches import MATCH_RADIUS
from services.pipeline import analyze_batch
from testkit.imagegen import make_photo_like

SIZES = (100_000, 1_000_000)
ARRIVALS = 128  # a hash-only ingest batch
ROUNDS = 5


def _resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def run_one(rows: int, patches: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for seed in range(ARRIVALS):
            path = Path(folder) / f"{seed}.jpg"
            make_photo_like(10**6 + seed, (480, 360)).save(path, quality=85)
            paths.append(str(path))
        arrivals = analyze_batch(paths, None, max_pixels=10**8)
    rng = np.random.default_rng(rows)
    ids = [f"{i:064x}" for i in range(rows)]
    phashes = rng.integers(0, 2**64 - 1, size=rows, dtype=np.uint64, endpoint=True)
    texts = _texts(rng, rows) if patches else None
    before = _resident_mib()
    started = time.perf_counter()
    codes = StoredCodes([phash_kind(8)], patch_radius=MATCH_RADIUS if patches else None)
    codes.add("phash", ids, phashes, patches=texts)
    load = time.perf_counter() - started
    held = _resident_mib() - before
    codes.near(arrivals.records, arrivals.variants)  # compiled, warm
    started = time.perf_counter()
    for _ in range(ROUNDS):
        codes.near(arrivals.records, arrivals.variants)
    match_ms = 1000 * (time.perf_counter() - started) / ROUNDS
    search_ms = None
    if patches:  # one query at a time, as the search's patch stage asks
        started = time.perf_counter()
        for record in arrivals.records:
            codes.near_patches([record.patches])
        search_ms = 1000 * (time.perf_counter() - started) / len(arrivals.records)
    del codes
    tracemalloc.start()  # the same load again, counting the bytes the index keeps allocated
    codes = StoredCodes([phash_kind(8)], patch_radius=MATCH_RADIUS if patches else None)
    codes.add("phash", ids, phashes, patches=texts)
    kept = tracemalloc.get_traced_memory()[0] / 2**20
    tracemalloc.stop()
    return {
        "rows": rows, "patches": patches, "load": load, "held": held, "kept": kept,
        "match": match_ms, "search": search_ms,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    parser.add_argument("--with-patches", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one, args.with_patches)))
        return 0
    results = []
    for rows in args.rows:
        for patches in (False, True):
            command = [sys.executable, "-m", "bench.patch_arrival", "--one", str(rows)]
            child = subprocess.run(
                command + (["--with-patches"] if patches else []),
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    table = _report.markdown_table(
        ["stored rows", "index", "load (s)", "allocated (MiB)", "bytes a row",
         "process memory grew (MiB)", f"match {ARRIVALS} arrivals (ms)",
         "one search's patch stage (ms)"],
        [[f"{r['rows']:,}", "pHash + patch codes" if r["patches"] else "pHash",
          f"{r['load']:.1f}", f"{r['kept']:.0f}", f"{r['kept'] * 2**20 / r['rows']:.0f}",
          f"{r['held']:.0f}", f"{r['match']:.1f}",
          "-" if r["search"] is None else f"{r['search']:.2f}"] for r in results],
    )  # fmt: skip
    body = (
        f"A worker's arrival index of random stored codes (16 patch codes a row, radius "
        f"{MATCH_RADIUS}); {ARRIVALS} generated photos matched against it, the mean "
        f"of {ROUNDS} batches; one process per row.\n\n{table}"
    )
    print(body)
    if not args.no_write:
        _report.write_section(
            "patch_arrival",
            "Dedup on arrival with the patch codes",
            body,
            ["numpy", "numba"],
            [f"--rows {' '.join(map(str, args.rows))}"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
