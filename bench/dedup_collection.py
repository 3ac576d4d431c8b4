"""Whole-collection dedup from Milvus Lite, end to end: one scan, all pairs, keeper-anchored groups.

``python -m bench.dedup_collection [--rows 100000] [--radius 10] [--db DIR] [--no-write]``:
synthetic rows with planted duplicate groups are stored in an embedded Milvus Lite server, then
``services.dedup.find_duplicates`` runs as ``lookalike dedup`` does; the stages are timed, the
peak memory of the dedup itself is measured, and every planted group is checked to come out
whole. ``--db DIR`` keeps the database there and reuses it on the next run (inserting 1,000,000
rows into Milvus Lite takes about half an hour; the dedup does not).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from bench import _report
from bench._report import markdown_table
from bench.dedup_scale import measured
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.dedup import DedupOptions, DedupReport, find_duplicates
from services.keepers import parse_policy
from services.records import ImageRecord
from services.schema import SchemaContract
from services.store import MilvusStore

_CHUNK = 50_000  # rows generated and inserted at a time; a multiple of the planting stride
_STRIDE = 50  # one planted group per 50 rows
_INSERT_BATCH = 10_000


def planted_groups(count: int, seed: int = 0) -> list[list[int]]:
    """The row indices of every planted group (base first), as ``synthetic_chunk`` plants them."""
    groups = []
    for start in range(0, count, _CHUNK):
        rng = np.random.default_rng([seed, start])
        end = min(start + _CHUNK, count)
        for base in range(start, end - 6, _STRIDE):
            size = int(rng.integers(2, 7))
            groups.append(list(range(base, base + size)))
            rng.integers(0, 6, size=size)  # keep the stream aligned with synthetic_chunk
    return groups


def synthetic_chunk(start: int, count: int, seed: int = 0) -> list[ImageRecord]:
    """Rows ``start .. start+count``: random pHashes (and random flip/rotation variants), with one
    planted group of 2-6 near copies (0-5 bits from the base) per 50 rows; each planted base is
    the largest file of its group, as an original is larger than its copies."""
    rng = np.random.default_rng([seed, start])
    plant_rng = np.random.default_rng([seed, start])
    codes = rng.integers(0, 2**63, size=count, dtype=np.int64).astype(np.uint64)
    codes |= rng.integers(0, 2, size=count, dtype=np.int64).astype(np.uint64) << np.uint64(63)
    for base in range(0, count - 6, _STRIDE):
        size = int(plant_rng.integers(2, 7))
        flips_per_member = plant_rng.integers(0, 6, size=size)
        for member in range(1, size):
            bits = rng.choice(64, size=int(flips_per_member[member]), replace=False)
            codes[base + member] = codes[base] ^ np.uint64(sum(1 << int(b) for b in bits))
    variants = rng.integers(0, 2**63, size=(count, 7), dtype=np.int64).astype(np.uint64)
    # File sizes as in a photo library: an original is larger than its copies (resized,
    # recompressed), so the keeper policy (pixels tie, then bytes) keeps the planted original.
    sizes = 50_000 + start + np.arange(count)
    for base in range(0, count - 6, _STRIDE):
        sizes[base] = 10_000_000 + start + base
    records = []
    for offset, code in enumerate(codes.tolist()):
        index = start + offset
        records.append(
            ImageRecord(
                id=hashlib.sha256(str(index).encode()).hexdigest(),
                path=f"/photos/{index:07d}.jpg",
                phash=int(code).to_bytes(8, "big"),
                phash_dihedral=tuple(int(v).to_bytes(8, "big") for v in variants[offset].tolist()),
                width=640,
                height=480,
                format="JPEG",
                bytes=int(sizes[offset]),
            )
        )
    return records


def chunks(count: int, seed: int = 0) -> Iterator[list[ImageRecord]]:
    for start in range(0, count, _CHUNK):
        yield synthetic_chunk(start, min(_CHUNK, count - start), seed)


def planted_found(report: DedupReport, groups: list[list[int]]) -> tuple[int, int, int]:
    """(planted groups that come out whole: every member in one reported group; planted copies
    found: in a reported group with at least one other member of their planted group; planted
    copies reported at all: in some group)."""
    group_of: dict[int, int] = {}
    for number, group in enumerate(report.groups):
        for member in group.members:
            group_of[int(Path(member.path).stem)] = number
    whole = copies = reported = 0
    for members in groups:
        numbers = [group_of.get(index, -1 - index) for index in members]
        whole += len(set(numbers)) == 1
        copies += sum(numbers.count(n) > 1 for n in numbers[1:])
        reported += sum(n >= 0 for n in numbers[1:])
    return whole, copies, reported


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--radius", type=int, nargs="+", default=[10], help="one or more radii")
    parser.add_argument("--db", type=Path, help="keep (and reuse) the database in this folder")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        home = args.db or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        home.mkdir(parents=True, exist_ok=True)
        server = stack.enter_context(EmbeddedMilvus(home, free_port()))
        store = MilvusStore.connect(
            server.uri, "bench", SchemaContract.current(None, None), timeout=600
        )
        stored = store.count()
        insert_s: float | None = None
        if stored != args.rows:
            if stored:
                store.drop()
                store = MilvusStore.connect(
                    server.uri, "bench", SchemaContract.current(None, None), timeout=600
                )
            started = time.perf_counter()
            for records in chunks(args.rows):
                for start in range(0, len(records), _INSERT_BATCH):
                    store.replace(records[start : start + _INSERT_BATCH])
                print(f"inserted up to {records[-1].path}", flush=True)
            insert_s = time.perf_counter() - started
        started = time.perf_counter()
        scan = store.scan_hashes()
        scan_s = time.perf_counter() - started
        del scan
        runs = []
        for radius in args.radius:
            options = DedupOptions(max_hamming=radius)
            runs.append(
                (radius, *measured(lambda o=options: find_duplicates(store, parse_policy([]), o)))
            )
    groups = planted_groups(args.rows)
    planted = sum(len(g) - 1 for g in groups)
    rows = []
    all_found = True
    for radius, report, total_s, rise_mib, peak_mib in runs:
        whole, copies, reported = planted_found(report, groups)
        all_found &= reported == planted
        rows.append(
            [
                f"{args.rows:,}",
                str(radius),
                f"{insert_s:.0f} s" if insert_s is not None else "reused",
                f"{scan_s:.1f} s",
                f"{total_s:.1f} s",
                f"{report.stats['pairs']:,}",
                f"{report.stats['groups']:,}",
                f"{int(report.stats['duplicates']):,} (planted {planted:,})",
                f"{reported:,} of {planted:,}",
                f"{copies:,} of {planted:,}",
                f"{whole:,} of {len(groups):,}",
                f"+{rise_mib:.0f} MiB (process {peak_mib:.0f} MiB)",
            ]
        )
    header = [
        "rows",
        "radius",
        "insert (setup)",
        "hash scan alone",
        "lookalike dedup end to end",
        "pairs",
        "groups",
        "duplicates",
        "planted copies in a group",
        "planted copies with a sibling",
        "planted groups found whole",
        "peak memory of the dedup",
    ]
    table = markdown_table(header, rows)
    print(table)
    if not args.no_write:
        _report.write_section(
            "dedup_collection",
            "Whole-collection dedup from Milvus Lite",
            table,
            packages=["pymilvus", "milvus-lite", "numba"],
        )
    return 0 if all_found else 1


if __name__ == "__main__":
    raise SystemExit(main())
