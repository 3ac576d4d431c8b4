"""A synthetic collection for the scale benchmarks: planted CLIP clusters and near-duplicates.

Row ``i`` has id sha256(str(i)), a random pHash and a unit 512-d vector near one of ``clusters``
random centres (cosine about 0.75 to it, as bench.clusters_speed); the last ``COPY_SHARE`` of
the rows are noisy copies of earlier rows (cosine about 0.93 to 0.999 with their source, as
bench.clip_join). Built once per size and kept: a Milvus Lite insert runs a few hundred rows a
second, so a 1,000,000-row collection takes most of an hour to build.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.records import ImageRecord, to_row
from services.schema import MAX_PATHS, SchemaContract
from services.store import MilvusStore
from services.vector_cache import VectorCache, append_chunk

log = logging.getLogger(__name__)

DIM = 512
CLUSTERS = 20
COPY_SHARE = 0.1
INSERT_BATCH = 2000
INSERT_THREADS = 2
INGEST_BATCH = 128  # the producer's default hash-only batch: one cache chunk a batch
_SEED = 0


def content_id(row: int) -> str:
    return hashlib.sha256(str(row).encode()).hexdigest()


def vectors(n: int, clusters: int = CLUSTERS) -> tuple[npt.NDArray[np.float32], np.ndarray]:
    """(n, DIM) unit vectors and each row's planted cluster; copies share their source's."""
    rng = np.random.default_rng(_SEED)
    centres = rng.normal(size=(clusters, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    truth = rng.integers(0, clusters, size=n)
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 65536):
        rows = slice(start, min(start + 65536, n))
        noise = rng.normal(scale=0.9 / np.sqrt(DIM), size=(rows.stop - start, DIM))
        out[rows] = centres[truth[rows]] + noise.astype(np.float32)
    copies = int(n * COPY_SHARE) if n >= 20 else 0
    if copies:
        sources = rng.integers(0, n - copies, copies)
        scale = rng.uniform(0.05, 0.36, (copies, 1)).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        jitter = rng.standard_normal((copies, DIM), dtype=np.float32) / np.sqrt(DIM)
        out[n - copies :] = out[sources] + scale * jitter
        truth[n - copies :] = truth[sources]
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out, truth


def records(matrix: npt.NDArray[np.float32], start: int, stop: int) -> list[ImageRecord]:
    rng = np.random.default_rng(start + 1)
    return [
        ImageRecord(
            id=content_id(i),
            path=f"/photos/{i:07d}.jpg",
            phash=rng.integers(0, 256, 8, dtype=np.uint8).tobytes(),
            width=640,
            height=480,
            format="JPEG",
            bytes=100_000,
            clip=matrix[i],
        )
        for i in range(start, stop)
    ]


def collection_name(n: int) -> str:
    return f"bench_scale_{n}"


def ensure(uri: str, n: int) -> MilvusStore:
    """The store over the synthetic collection of ``n`` rows, built unless already complete."""
    contract = SchemaContract.current("bench", DIM)
    store = MilvusStore.connect(uri, collection_name(n), contract, timeout=600.0)
    have = store.count()
    if have == n:
        return store
    if have:
        store.drop()
        store.close()
        store = MilvusStore.connect(uri, collection_name(n), contract, timeout=600.0)
    matrix, _ = vectors(n)
    started = time.perf_counter()
    insert(store, matrix, 0, n)
    log.info("built %s in %.0f s", store.collection, time.perf_counter() - started)
    return store


def insert(
    store: MilvusStore,
    matrix: npt.NDArray[np.float32],
    start: int,
    stop: int,
    clusters: npt.NDArray[np.int64] | None = None,
) -> None:
    """Insert rows ``start:stop`` of ``matrix`` (``INSERT_THREADS`` at a time, bypassing the
    store's merge and cache), each with its cluster from ``clusters`` (None: unassigned)."""
    started = time.perf_counter()

    def write(first: int) -> None:
        batch = records(matrix, first, min(first + INSERT_BATCH, stop))
        if clusters is not None:
            batch = [replace(r, cluster=int(clusters[i])) for i, r in enumerate(batch, first)]
        rows = [to_row(r, with_clip=True, max_paths=MAX_PATHS) for r in batch]
        store.client.insert(store.collection, rows, timeout=600.0)

    with ThreadPoolExecutor(INSERT_THREADS) as pool:
        for done, _ in enumerate(pool.map(write, range(start, stop, INSERT_BATCH)), 1):
            if done % 50 == 0:
                rate = done * INSERT_BATCH / (time.perf_counter() - started)
                log.info("%s: %d rows, %.0f rows/s", store.collection, done * INSERT_BATCH, rate)


def cache_like_workers(
    cache: VectorCache, matrix: npt.NDArray[np.float32], start: int, stop: int
) -> int:
    """Append rows ``start:stop`` of ``matrix`` to ``cache`` one chunk per ingest batch, as
    workers do (``MilvusStore.upsert`` after each insert); returns the chunks written."""
    for first in range(start, stop, INGEST_BATCH):
        last = min(first + INGEST_BATCH, stop)
        ids = [content_id(i) for i in range(first, last)]
        append_chunk(cache.folder, cache.dim, ids, matrix[first:last])
    return -(-(stop - start) // INGEST_BATCH)


def key_page(store: MilvusStore, first: str, rows: int, fields: Sequence[str]) -> Any:
    """One ``client.query`` page as the bulk read asks for one, left undecoded: up to ``rows``
    rows from the key ``first`` on, in key order (the query iterator's flags)."""
    return store.client.query(
        store.collection,
        filter=f'id >= "{first}"',
        output_fields=list(fields),
        limit=rows,
        iterator="True",
        reduce_stop_for_best="True",
        timeout=600.0,
    )


def measure_each(
    home: Path | None, sizes: Sequence[int], measure: Callable[[MilvusStore, int], dict[str, float]]
) -> list[dict[str, float]]:
    """``measure(store, n)`` of each size's collection (built unless kept under ``home``; a
    temporary folder when None), in one embedded Milvus Lite server; each result printed."""
    results = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = home or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        with EmbeddedMilvus(folder, free_port()) as server:
            for n in sizes:
                store = ensure(server.uri, n)
                try:
                    results.append(measure(store, n))
                finally:
                    store.close()
                print(results[-1], flush=True)
    return results
