"""Whole-collection dedup from Milvus Lite, end to end: scan hashes, pair, read rows, group.

``python -m bench.dedup_collection [--rows 100000] [--radius 10] [--no-write]``: synthetic rows
with planted duplicate groups are stored in an embedded Milvus Lite server, then
``services.dedup.find_duplicates`` runs as ``lookalike dedup`` does; the stages are timed.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._report import markdown_table, write_section
from services.dedup import DedupOptions, find_duplicates
from services.embedded import EmbeddedMilvus
from services.keepers import parse_policy
from services.records import ImageRecord
from services.schema import SchemaContract
from services.store import MilvusStore

_INSERT_BATCH = 10_000


def synthetic_rows(count: int, seed: int = 0) -> tuple[list[ImageRecord], int]:
    """Random pHashes with one planted group of 2-6 near copies per 50 rows."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**63, size=count, dtype=np.int64).astype(np.uint64)
    planted = 0
    for start in range(0, count - 6, 50):
        size = int(rng.integers(2, 7))
        for member in range(1, size):
            flips = rng.choice(64, size=int(rng.integers(0, 6)), replace=False)
            codes[start + member] = codes[start] ^ np.uint64(sum(1 << int(f) for f in flips))
        planted += size - 1
    records = []
    for index, code in enumerate(codes.tolist()):
        variants = rng.integers(0, 2**63, size=7, dtype=np.int64).astype(np.uint64).tolist()
        records.append(
            ImageRecord(
                id=hashlib.sha256(str(index).encode()).hexdigest(),
                path=f"/photos/{index:07d}.jpg",
                phash=int(code).to_bytes(8, "big"),
                phash_dihedral=tuple(int(v).to_bytes(8, "big") for v in variants),
                width=640,
                height=480,
                format="JPEG",
                bytes=50_000 + index,
            )
        )
    return records, planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    records, planted = synthetic_rows(args.rows)
    with tempfile.TemporaryDirectory() as home, EmbeddedMilvus(Path(home), _free_port()) as server:
        store = MilvusStore(server.uri, "bench", SchemaContract.current(None, None), timeout=300)
        started = time.perf_counter()
        for start in range(0, len(records), _INSERT_BATCH):
            store.replace(records[start : start + _INSERT_BATCH])
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        scan = store.scan_hashes()
        scan_s = time.perf_counter() - started
        started = time.perf_counter()
        report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=args.radius))
        total_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    found = int(report.stats["duplicates"])
    row = [
        f"{args.rows:,}",
        f"{insert_s:.1f} s",
        f"{scan_s:.1f} s ({len(scan.ids):,} rows)",
        f"{total_s:.1f} s",
        f"{report.stats['pairs']:,}",
        f"{report.stats['groups']:,}",
        f"{found:,} (planted {planted:,})",
        f"{peak_mib:.0f} MiB",
    ]
    header = [
        "rows",
        "insert (setup)",
        "hash scan alone",
        "lookalike dedup end to end",
        "pairs",
        "groups",
        "duplicates",
        "peak RSS (whole process)",
    ]
    table = markdown_table(header, [row])
    print(table)
    if not args.no_write:
        body = (
            f"Synthetic rows in an embedded Milvus Lite server, radius {args.radius}; "
            "`find_duplicates` as `lookalike dedup` runs it: one scan of ids and hashes "
            "(query iterator), the all-pairs join, the rows in pairs read by id, keeper-anchored "
            "grouping. The end-to-end time includes its own hash scan.\n\n" + table
        )
        write_section(
            "dedup_collection",
            "Whole-collection dedup from Milvus Lite",
            body,
            packages=["pymilvus", "milvus-lite", "numba"],
        )
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    raise SystemExit(main())
