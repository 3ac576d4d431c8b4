"""Ingest throughput as the collection grows: ``python -m bench.ingest_speed --growth``.

One collection is filled step by step with synthetic rows (random pHashes, dihedral hashes and
16 patch codes each, bulk-inserted) to each size of ``--growth-sizes``; at each size, the same
photos are ingested end to end (producer, Redis, one Celery worker, Milvus Lite) once per arrival
design, side by side: ``milvus`` (a range search per batch, the old design) and ``memory`` (the
worker's in-process index, loaded from Milvus at its first batch, with the patch codes: the
default settings). Each design gets a fresh worker and a warm-up job
(whose index load is timed apart); after each job its rows and its files cache are deleted, so
the next job stores the photos again into a collection of the same size. The index load is also
timed in this process (``ArrivalIndex.rebuild``: one bulk read of ids, pHashes and patch codes,
then the tables). Hash-only: the worker runs without CLIP.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import redis

from bench import _report
from bench.ingest_speed import Bench, Config, Run, cpu_seconds, milvus_pid
from bench.patch_join import _texts
from services.arrival import find_matches
from services.arrival_index import ArrivalIndex, arrival_codes
from services.code_feed import RedisCodeFeed
from services.code_index import StoredCodes, phash_kind
from services.ledger import files_cache_name
from services.patches import MATCH_RADIUS, PatchCodes
from services.pipeline import BatchOutcome, analyze_batch
from services.records import ImageRecord, to_row
from services.schema import MAX_PATHS, SchemaContract
from services.settings import Settings
from services.store import MilvusStore

ROOT = Path(__file__).resolve().parent.parent
PNG = ROOT / "docs" / "img" / "ingest_growth.png"
DESIGNS = ("milvus", "memory")
SHARE_TARGET = 0.8  # rate into 1M rows / rate into an empty collection
RATE_TARGET = 400.0  # images/s into 1M rows, hash-only, 2 cores
_FILL_CHUNK = 2000
_QUIET_LOAD = 2.5  # a load average above this on 2 cores: other work ran too
_STAGE_FILES = 256
# After a fill, Milvus Lite seals and compacts segments for a while: the jobs wait until the
# server uses under this share of a core over a window, or the longest wait has passed.
_IDLE_SHARE = 0.05
_IDLE_WINDOW_S = 3.0
_IDLE_MAX_S = 300.0
_INDEX_ONLY_SIZES = (1_000_000,)


@dataclass(frozen=True)
class Point:
    size: int
    design: str
    seconds: float
    rate: float
    index_load_s: float | None  # the worker's first batch (warm-up job) minus the old design's


def synthetic(start: int, count: int, rng: np.random.Generator) -> list[ImageRecord]:
    codes = rng.integers(0, 2**64 - 1, size=(count, 8), dtype=np.uint64, endpoint=True)
    raw = codes.astype(">u8").tobytes()
    patches = [PatchCodes.from_hex(text) for text in _texts(rng, count)]  # 16 random ones
    records = []
    for i in range(count):
        hashes = [raw[(i * 8 + k) * 8 : (i * 8 + k + 1) * 8] for k in range(8)]
        number = start + i
        records.append(
            ImageRecord(
                id=hashlib.sha256(f"synthetic {number}".encode()).hexdigest(),
                path=f"/synthetic/{number:07d}.jpg",
                phash=hashes[0],
                phash_dihedral=tuple(hashes[1:]),
                patches=patches[i],
                width=640,
                height=480,
                format="JPEG",
                bytes=100_000,
            )
        )
    return records


def fill(store: MilvusStore, have: int, want: int) -> float:
    """Bulk-insert synthetic rows until ``want`` are stored; returns the seconds it took."""
    rng = np.random.default_rng(have)
    started = time.perf_counter()
    for start in range(have, want, _FILL_CHUNK):
        records = synthetic(start, min(_FILL_CHUNK, want - start), rng)
        rows = [to_row(r, with_clip=False, max_paths=MAX_PATHS) for r in records]
        store.client.insert(store.collection, rows, timeout=600)  # new ids: no upsert needed
    return time.perf_counter() - started


def settle(port: int) -> float:
    """Wait until the Milvus server on ``port`` is idle (see ``_IDLE_SHARE``); the seconds it
    took."""
    pid, started = milvus_pid(port), time.perf_counter()
    while time.perf_counter() - started < _IDLE_MAX_S:
        before = cpu_seconds(pid)
        time.sleep(_IDLE_WINDOW_S)
        if cpu_seconds(pid) - before < _IDLE_SHARE * _IDLE_WINDOW_S:
            break
    return time.perf_counter() - started


def content_ids(files: Sequence[Path]) -> list[str]:
    return sorted({hashlib.sha256(p.read_bytes()).hexdigest() for p in files})


def warmup_files(batch_size: int, concurrency: int) -> int:
    """A warm-up job gives every worker process a batch: each loads its index then."""
    return batch_size * concurrency


def forget_job(bench: Bench, store: MilvusStore, files: Sequence[Path]) -> None:
    """Delete what a job stored (its rows, the files cache) so the next job stores it again."""
    ids = content_ids(files)
    for start in range(0, len(ids), 500):
        store.delete(ids[start : start + 500])
    client = redis.Redis.from_url(bench.redis_url)
    client.delete(files_cache_name(store.collection, store.instance))


def timed_jobs(
    bench: Bench,
    settings: Settings,
    store: MilvusStore,
    warm: Sequence[Path],
    files: Sequence[Path],
    stored: int,
    repeat: int,
) -> tuple[float, Run]:
    """On a fresh worker, a warm-up job of ``warm``, then ``repeat`` jobs of ``files`` into
    ``store``'s collection of ``stored`` rows, each job's rows deleted after it: the warm-up's
    seconds and the fastest job."""
    with bench.worker(settings) as stack:
        collection = store.collection
        warmup = bench.ingest(settings, stack, warm, collection=collection, stored=stored)
        forget_job(bench, store, warm)
        jobs = []
        for _ in range(repeat):
            jobs.append(bench.ingest(settings, stack, collection=collection, stored=stored))
            forget_job(bench, store, files)
    return warmup.seconds, min(jobs, key=lambda job: job.seconds)


def index_load(store: MilvusStore, redis_url: str) -> tuple[float, ArrivalIndex]:
    index = ArrivalIndex(
        store,
        RedisCodeFeed.from_url(redis_url, store.collection, store.instance),
        arrival_codes(8, patches=True),
    )
    started = time.perf_counter()
    index.rebuild()
    return time.perf_counter() - started, index


@dataclass(frozen=True)
class Stage:
    """Milliseconds per batch of the Hamming stage of ``find_matches`` alone, in this process."""

    size: int
    milvus_ms: float | None  # Milvus range search over the variants
    memory_ms: float  # index refresh and search (deletions come through the feed: no read)


def arrival_batches(files: Sequence[Path], batch_size: int) -> list[BatchOutcome]:
    chosen = files[:_STAGE_FILES]
    return [
        analyze_batch(chosen[start : start + batch_size], None, max_pixels=10**8)
        for start in range(0, len(chosen), batch_size)
    ]


def stage_ms(store: MilvusStore, index: ArrivalIndex | None, batches: list[BatchOutcome]) -> float:
    find_matches(store, batches[0].records, batches[0].variants, max_hamming=8, min_cosine=1.0,
                 index=index)  # fmt: skip
    started = time.perf_counter()
    for batch in batches:
        find_matches(store, batch.records, batch.variants, max_hamming=8, min_cosine=1.0,
                     index=index)  # fmt: skip
    return 1000 * (time.perf_counter() - started) / len(batches)


def index_only_ms(size: int, batches: list[BatchOutcome]) -> float:
    """The in-process index alone over ``size`` synthetic codes (no Milvus)."""
    rng = np.random.default_rng(size)
    codes = StoredCodes([phash_kind(8)], patch_radius=MATCH_RADIUS)
    ids = [f"{i:064x}" for i in range(size)]
    values = rng.integers(0, 2**64 - 1, size=size, dtype=np.uint64, endpoint=True)
    codes.add("phash", ids, values, patches=_texts(rng, size))
    codes.near(batches[0].records, batches[0].variants)
    started = time.perf_counter()
    for batch in batches:
        codes.near(batch.records, batch.variants)
    return 1000 * (time.perf_counter() - started) / len(batches)


def run(
    bench: Bench,
    files: Sequence[Path],
    sizes: Sequence[int],
    batch_size: int,
    concurrency: int,
    repeat: int = 1,
) -> tuple[list[Point], dict[int, float], dict[int, float], dict[int, float], list[Stage]]:
    """Every (size, design) point (the fastest of ``repeat`` timed jobs), the seconds each fill
    step took and each index load, and the cost of the Hamming stage per batch at each size."""
    collection = "bench_growth"
    store = MilvusStore.connect(
        f"http://127.0.0.1:{bench.milvus_port}", collection, SchemaContract.current(None, None)
    )
    points: list[Point] = []
    fills: dict[int, float] = {}
    loads: dict[int, float] = {}
    stages: list[Stage] = []
    settles: dict[int, float] = {}
    have = 0
    warm = list(files[: warmup_files(batch_size, concurrency)])
    batches = arrival_batches(files, batch_size)
    for size in sizes:
        fills[size] = fill(store, have, size)
        have = size
        settles[size] = settle(bench.milvus_port)
        loads[size], index = index_load(store, bench.redis_url)
        stages.append(Stage(size, stage_ms(store, None, batches), stage_ms(store, index, batches)))
        print(f"{size} rows: filled in {fills[size]:.0f} s, server idle after "
              f"{settles[size]:.0f} s, index load {loads[size]:.1f} s")  # fmt: skip
        print(stages[-1], flush=True)
        warmups: dict[str, float] = {}
        for design in DESIGNS:
            config = Config(f"hash-only {design}", False, concurrency, batch_size)
            settings = bench.settings(config, None).model_copy(update={"arrival_index": design})
            warmups[design], timed = timed_jobs(bench, settings, store, warm, files, have, repeat)
            load = warmups[design] - warmups["milvus"] if design == "memory" else None
            points.append(Point(size, design, timed.seconds, len(files) / timed.seconds, load))
            print(points[-1], flush=True)
    store.drop()
    store.close()
    for size in _INDEX_ONLY_SIZES:
        if size > max(sizes):
            stages.append(Stage(size, None, index_only_ms(size, batches)))
            print(stages[-1], flush=True)
    return points, fills, settles, loads, stages


def body(
    points: Sequence[Point],
    stages: Sequence[Stage],
    fills: dict[int, float],
    settles: dict[int, float],
    loads: dict[int, float],
    source: str,
    load: tuple[float, float],
    concurrency: int,
    batch_size: int,
    repeat: int = 1,
    *,
    png: bool = True,
) -> str:
    """The section's text; ``png``: also draw the curve into docs/img (not for --no-write)."""
    header = ["stored rows", "design", "seconds", "images/s", "vs empty", "index load (s)"]
    empty = {p.design: p.rate for p in points if p.size == 0}
    rows = [
        [
            f"{p.size:,}",
            p.design,
            f"{p.seconds:.2f}",
            f"{p.rate:.0f}",
            f"{100 * p.rate / empty[p.design]:.0f}%" if p.design in empty else "-",
            f"{loads[p.size]:.1f}" if p.design == "memory" else "-",
        ]
        for p in points
    ]
    largest = max(p.size for p in points)
    facts = []
    for design in DESIGNS:
        last = next(p for p in points if p.size == largest and p.design == design)
        if design in empty:
            share = last.rate / empty[design]
            facts.append(
                f"{design}: {last.rate:.0f} images/s into {largest:,} rows, "
                f"{100 * share:.0f}% of its empty-collection rate ({empty[design]:.0f}); target "
                f"{100 * SHARE_TARGET:.0f}%: {_verdict(share >= SHARE_TARGET)}; target "
                f"{RATE_TARGET:.0f} images/s: {_verdict(last.rate >= RATE_TARGET)}."
            )
    setup = [
        f"{source}; hash-only, {concurrency} worker processes, batches of {batch_size}; "
        "the producer in this process, timed until the job is done and every row is counted",
        "images/s = files / seconds of the fastest of "
        + (f"{repeat} jobs" if repeat > 1 else "one job")
        + " per (size, design), after a warm-up job of "
        f"{warmup_files(batch_size, concurrency)} files (a batch for each worker process) on "
        "the same worker",
        "index load: `ArrivalIndex.rebuild` in this process (bulk read and tables), what a "
        "worker pays once, at its first batch",
        "fill (synthetic rows, bulk insert, not timed in the rates): "
        + ", ".join(f"{s:,} in {fills[s]:.0f} s" for s in fills),
        "before each size's jobs the Milvus server was left to go idle (under "
        f"{_IDLE_SHARE:.0%} of a core over {_IDLE_WINDOW_S:.0f} s; at most {_IDLE_MAX_S:.0f} s): "
        + ", ".join(f"{s:,} after {settles[s]:.0f} s" for s in settles),
        f"load average (1 min) {load[0]:.1f} before, {load[1]:.1f} after"
        + (": measured under the load of other work" if max(load) > _QUIET_LOAD else ""),
    ]
    return (
        "; ".join(setup)
        + ".\n\n"
        + _report.markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {fact}" for fact in facts)
        + "\n\n"
        + f"The Hamming stage of arrival alone, per batch of {batch_size} photos (their 8 "
        f"variants each; the first {_STAGE_FILES} files), in this process:\n\n"
        + _report.markdown_table(
            ["stored rows", "milvus: range search (ms)", "memory: index, no read (ms)"],
            [
                [
                    f"{st.size:,}",
                    "-" if st.milvus_ms is None else f"{st.milvus_ms:.1f}",
                    f"{st.memory_ms:.1f}"
                    + (
                        " (index alone, synthetic codes, no Milvus)" if st.milvus_ms is None else ""
                    ),
                ]
                for st in stages
            ],
        )
        + "\n\n"
        + (write_png(points) if png else "(no PNG: --no-write)")
        + "\n"
    )


def write_png(points: Sequence[Point]) -> str:
    label = {"milvus": "Milvus range search per batch (old)", "memory": "in-process index"}
    curves = {label[d]: {p.size: p.rate for p in points if p.design == d} for d in DESIGNS}
    return _report.growth_png(
        PNG, curves, ylabel="images/s (end to end, hash-only)",
        title="Ingest rate as the collection grows (2 shared cores)",
        alt="ingest growth curve", target=RATE_TARGET,
    )  # fmt: skip


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"
