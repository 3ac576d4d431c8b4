"""CLIP ingest as the collection grows: ``python -m bench.clip_growth``.

One CLIP collection is filled step by step with synthetic rows (``bench._synthetic``'s 512-d
vectors around planted centres, random pHashes and 16 random patch codes each, bulk-inserted) to
each size of ``--sizes``. At each size, the same photos are ingested end to end (producer, Redis,
one Celery worker of 2 processes with the random-weight CLIP ViT-B/32 of ``bench.clip_speed`` in
bf16, Milvus Lite), once per index on the ``clip`` field, side by side on the same rows: ``FLAT``
(what Milvus Lite collections got before) and ``IVF_FLAT`` (what they get now,
``services.store.IndexProfile.lite``). Dedup on arrival sends one CLIP search per batch (the
cosine of its matches); the rest of arrival is the in-process index of the default settings.

Also per size and index, in this process: one CLIP search of a batch of 32 near-copies of stored
rows (what a worker sends per batch), and the share of the stored rows at cosine >= 0.95 of
256 such near-copies that the search returns (FLAT is exact: its share is 1).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench import _report, _synthetic
from bench._ingest_growth import settle, synthetic, timed_jobs, warmup_files
from bench.ingest_speed import CLIP_DIM, DEFAULT_IMAGES, Bench, Config, ingest_roots
from services.records import to_row
from services.schema import MAX_PATHS, SchemaContract
from services.settings import CLIP_INGEST_BATCH
from services.store import MilvusStore

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "docs" / "img" / "clip_growth.png"
INDEXES = {"FLAT": {}, "IVF_FLAT": {"nlist": 1024}}
SHARE_TARGET = 0.9  # CLIP ingest into 1M rows / into an empty collection
MIN_COSINE = 0.95  # dedup on arrival's default
_FILL_CHUNK = 2000
_RECALL_QUERIES = 256
_CONCURRENCY = 2


@dataclass(frozen=True)
class Point:
    size: int
    index: str
    seconds: float  # the fastest timed job
    rate: float
    index_build_s: float  # replacing the clip index on the stored rows (release, build, load)
    search_ms: float  # one CLIP search of a batch of 32 near-copies, in this process
    recall: float  # of the stored rows at cosine >= MIN_COSINE of the near-copies


def near_copies(
    matrix: npt.NDArray[np.float32], count: int, seed: int
) -> tuple[npt.NDArray[np.float32], list[set[int]]]:
    """``count`` noisy copies of stored rows (cosine about 0.92-0.99 to their source) and, for
    each, the stored rows at cosine >= MIN_COSINE (the exact answer)."""
    rng = np.random.default_rng(seed)
    sources = rng.integers(0, len(matrix), count)
    scales = rng.uniform(0.15, 0.45, (count, 1)) / np.sqrt(matrix.shape[1])
    queries = matrix[sources] + (rng.normal(size=(count, matrix.shape[1])) * scales).astype(
        np.float32
    )
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    truth: list[set[int]] = [set() for _ in queries]
    for start in range(0, len(matrix), 65536):
        rows, columns = np.nonzero(matrix[start : start + 65536] @ queries.T >= MIN_COSINE)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            truth[column].add(start + row)
    return queries, truth


def row_id(row: int) -> str:
    """The content id ``bench._ingest_growth.synthetic`` gives stored row ``row``."""
    return hashlib.sha256(f"synthetic {row}".encode()).hexdigest()


def fill(store: MilvusStore, matrix: npt.NDArray[np.float32], have: int, want: int) -> float:
    rng = np.random.default_rng(have)
    started = time.perf_counter()
    for start in range(have, want, _FILL_CHUNK):
        count = min(_FILL_CHUNK, want - start)
        records = [
            replace(r, clip=matrix[start + i]) for i, r in enumerate(synthetic(start, count, rng))
        ]
        rows = [to_row(r, with_clip=True, max_paths=MAX_PATHS) for r in records]
        store.client.insert(store.collection, rows, timeout=600)
    return time.perf_counter() - started


def set_clip_index(store: MilvusStore, index: str) -> float:
    """Replace the ``clip`` index by ``index``; the seconds it took (the build included)."""
    client, name = store.client, store.collection
    started = time.perf_counter()
    client.release_collection(name, timeout=600)
    client.drop_index(name, "clip", timeout=600)
    params = client.prepare_index_params()
    params.add_index("clip", index_type=index, metric_type="COSINE", params=INDEXES[index])
    client.create_index(name, params, timeout=3600)
    client.load_collection(name, timeout=3600)
    return time.perf_counter() - started


def search_cost(
    store: MilvusStore, queries: npt.NDArray[np.float32], truth: list[set[int]], size: int
) -> tuple[float, float]:
    """(ms of one search of a batch, the median of the batches; recall of the exact pairs)."""
    ids = {row_id(i): i for i in set().union(*truth)} if size else {}
    times, found = [], 0
    store.clip_neighbours(list(queries[:CLIP_INGEST_BATCH]), 17)  # warm
    for start in range(0, len(queries), CLIP_INGEST_BATCH):
        batch = queries[start : start + CLIP_INGEST_BATCH]
        began = time.perf_counter()
        groups = store.clip_neighbours(list(batch), 17)
        times.append(time.perf_counter() - began)
        for k, hits in enumerate(groups):
            got = {ids.get(h.id) for h in hits if h.cosine >= MIN_COSINE}
            found += len(got & truth[start + k])
    pairs = sum(map(len, truth))
    return 1000 * float(np.median(times)), found / pairs if pairs else 1.0


def run(
    bench: Bench, clip_dir: str, files: Sequence[Path], sizes: Sequence[int], repeat: int
) -> tuple[list[Point], dict[int, float]]:
    collection = "bench_clip_growth"
    contract = SchemaContract.current(clip_dir, CLIP_DIM)
    store = MilvusStore.connect(
        f"http://127.0.0.1:{bench.milvus_port}", collection, contract, timeout=600
    )
    matrix, _ = _synthetic.vectors(max(sizes))
    points: list[Point] = []
    fills: dict[int, float] = {}
    have = 0
    config = Config("CLIP bf16", True, _CONCURRENCY, CLIP_INGEST_BATCH, "bf16")
    settings = bench.settings(config, clip_dir)
    warm = list(files[: warmup_files(CLIP_INGEST_BATCH, _CONCURRENCY)])
    for size in sizes:
        fills[size] = fill(store, matrix, have, size)
        have = size
        queries, truth = near_copies(matrix[:size], _RECALL_QUERIES, size) if size else (
            np.random.default_rng(0).normal(size=(_RECALL_QUERIES, CLIP_DIM)).astype(np.float32),
            [set() for _ in range(_RECALL_QUERIES)],
        )  # fmt: skip
        print(f"{size:,} rows filled in {fills[size]:.0f} s", flush=True)
        for index in INDEXES:
            build = set_clip_index(store, index)
            settle(bench.milvus_port)
            search_ms, recall = search_cost(store, queries, truth, size)
            _, best = timed_jobs(bench, settings, store, warm, files, have, repeat)
            points.append(
                Point(
                    size, index, best.seconds, len(files) / best.seconds, build, search_ms, recall
                )
            )
            print(points[-1], flush=True)
    store.drop()
    store.close()
    return points, fills


def body(
    points: Sequence[Point], fills: dict[int, float], source: str, repeat: int,
    load: tuple[float, float], *, png: bool,
) -> str:  # fmt: skip
    empty = {p.index: p.rate for p in points if p.size == 0}
    header = [
        "stored rows",
        "clip index",
        "seconds",
        "images/s",
        "vs empty",
        "index build (s)",
        "CLIP search, batch of 32 (ms)",
        "recall, cosine >= 0.95",
    ]
    rows = [
        [f"{p.size:,}", p.index, f"{p.seconds:.2f}", f"{p.rate:.1f}",
         f"{100 * p.rate / empty[p.index]:.0f}%" if p.index in empty else "-",
         f"{p.index_build_s:.1f}", f"{p.search_ms:.0f}",
         "-" if p.size == 0 else f"{p.recall:.4f}"]
        for p in points
    ]  # fmt: skip
    largest = max(p.size for p in points)
    facts = []
    for index in INDEXES:
        last = next(p for p in points if p.size == largest and p.index == index)
        share = last.rate / empty[index]
        facts.append(
            f"{index}: {last.rate:.1f} images/s into {largest:,} rows, {100 * share:.0f}% of its "
            f"empty-collection rate ({empty[index]:.1f}); target {100 * SHARE_TARGET:.0f}%: "
            + ("met" if share >= SHARE_TARGET else "**not met**")
            + "."
        )
    setup = (
        f"{source}; CLIP ViT-B/32 (random weights) in bf16, {_CONCURRENCY} worker processes, "
        f"batches of {CLIP_INGEST_BATCH}; images/s = files / seconds of the fastest of {repeat} "
        f"job(s) per (size, index), after a warm-up job of "
        f"{warmup_files(CLIP_INGEST_BATCH, _CONCURRENCY)} files on the same worker; fill "
        "(synthetic rows with vectors, not timed in the rates): "
        + ", ".join(f"{s:,} in {fills[s]:.0f} s" for s in fills)
        + f"; recall: of the stored rows at cosine >= {MIN_COSINE} of {_RECALL_QUERIES} "
        f"near-copies of stored rows, the share their search (top 17) returns; load average "
        f"(1 min) {load[0]:.1f} before, {load[1]:.1f} after."
    )
    return (
        setup + "\n\n" + _report.markdown_table(header, rows) + "\n\n"
        + "\n".join(f"- {fact}" for fact in facts) + "\n\n"
        + (write_png(points) if png else "(no PNG: --no-write)") + "\n"
    )  # fmt: skip


def write_png(points: Sequence[Point]) -> str:
    curves = {f"clip on {i}": {p.size: p.rate for p in points if p.index == i} for i in INDEXES}
    return _report.growth_png(
        PNG, curves, ylabel="images/s (end to end, CLIP bf16)",
        title="CLIP ingest rate as the collection grows (2 shared cores)",
        alt="CLIP ingest growth curve",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images")
    parser.add_argument("--limit", type=int, default=None, help="ingest only the first N files")
    parser.add_argument("--repeat", type=int, default=2, help="timed jobs per (size, index)")
    parser.add_argument(
        "--sizes", default="0,10000,100000,1000000", help="stored rows, comma-separated, ascending"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if sizes != sorted(sizes) or sizes[0] != 0:
        parser.error(f"--sizes must be ascending from 0, got {sizes}")
    from bench.clip_speed import build_vit_b32

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="clip-growth-") as tmp:
        scratch = Path(tmp)
        files, source, roots = ingest_roots(args.images, args.limit, scratch)
        clip_dir = str(build_vit_b32(scratch / "clip"))
        with Bench(scratch / "home", files, roots) as bench:
            points, fills = run(bench, clip_dir, files, sizes, args.repeat)
    load = (load_before, os.getloadavg()[0])
    text = body(points, fills, source, args.repeat, load, png=not args.no_write)
    print(text)
    if not args.no_write:
        _report.write_section(
            "clip_growth",
            "CLIP ingest as the collection grows",
            text,
            packages=["pymilvus", "milvus-lite", "celery", "redis", "torch", "numpy"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
