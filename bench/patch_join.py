"""What the patch codes add to whole-collection dedup at scale: the join of every row's patch
codes (``services.patch_pairs.patch_pairs``) on N rows, in time and memory.

    python -m bench.patch_join                        # 100,000 and 1,000,000 rows
    python -m bench.patch_join --rows 20000 --no-write

Each size runs in a fresh process (its peak resident memory is the size's own): N rows of 16
patch codes, drawn at random (uniform 64-bit codes, centres and sizes), packed as the store's
scan packs them (``services.patches.patch_table`` of the stored text, in batches), then joined at
the default radius. Random codes seldom meet, so this is the cost of the index and of the
packing, not of verifying many candidate pairs: photos' patch codes cluster more than random
ones, and a collection of near-copies has many more pairs to verify (each costs microseconds).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from bench import _report
from services.patch_pairs import patch_pairs
from services.patches import MATCH_RADIUS, PATCHES, join_tables, patch_table

SIZES = (100_000, 1_000_000)
BATCH = 16384  # rows per scan batch, as MilvusStore.scan_hashes reads them


def _texts(rng: np.random.Generator, rows: int) -> list[str]:
    """``rows`` stored ``patch_codes`` texts of 16 random patches each."""
    header = np.array([65535, 49151], ">u2").tobytes()
    record = np.dtype([("code", ">u8"), ("x", ">u2"), ("y", ">u2"), ("half", ">u2")])
    body = np.empty((rows, PATCHES), record)
    body["code"] = rng.integers(0, 2**63, (rows, PATCHES), dtype=np.uint64) * 2 + rng.integers(
        0, 2, (rows, PATCHES), dtype=np.uint64
    )
    body["half"] = rng.integers(3000, 12000, (rows, PATCHES))
    body["x"] = rng.integers(13000, 52000, (rows, PATCHES))
    body["y"] = rng.integers(13000, 36000, (rows, PATCHES))
    return [(header + row.tobytes()).hex() for row in body]


def run_one(rows: int) -> dict[str, float]:
    rng = np.random.default_rng(rows)
    tables, packing = [], 0.0
    for start in range(0, rows, BATCH):
        texts = _texts(rng, min(BATCH, rows - start))
        began = time.perf_counter()
        tables.append(patch_table(texts))
        packing += time.perf_counter() - began
    began = time.perf_counter()
    table = join_tables(tables)
    del tables
    packing += time.perf_counter() - began
    began = time.perf_counter()
    found = patch_pairs(table, MATCH_RADIUS)
    joining = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB to GiB
    return {"rows": rows, "packing": packing, "join": joining, "pairs": len(found), "peak": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args.one)))
        return 0
    results = []
    for rows in args.rows:
        child = subprocess.run(
            [sys.executable, "-m", "bench.patch_join", "--one", str(rows)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))
    table = _report.markdown_table(
        ["rows", "patch codes", "packing the scan's text (s)", "join (s)", "pairs",
         "peak memory of the process (GiB)"],
        [[f"{r['rows']:,}", f"{r['rows'] * PATCHES:,}", f"{r['packing']:.1f}", f"{r['join']:.1f}",
          r["pairs"], f"{r['peak']:.2f}"] for r in results],
    )  # fmt: skip
    body = (
        f"Random patch codes ({PATCHES} a row), joined within {MATCH_RADIUS} bits; one process "
        f"per size.\n\n{table}"
    )
    print(body)
    if not args.no_write:
        _report.write_section(
            "patch_join",
            "The patch codes' join at scale",
            body,
            ["numpy", "numba"],
            [f"--rows {' '.join(map(str, args.rows))}"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
