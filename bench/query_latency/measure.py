"""Timing ``bench.query_latency``'s queries: one at a time, from concurrent clients, raw calls."""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.query_latency.exact import Faiss, Mask, exact, recall_at_k
from bench.query_latency.prototypes import (
    CANDIDATE_LIMIT,
    HIT_FIELDS,
    ROW_FIELDS,
    ROW_FIELDS_WITH_CLIP,
    HashCache,
    milvus_filter_hybrid,
    two_trips_hybrid,
)
from bench.query_latency.workload import (
    COLLECTION,
    DIM,
    FILTER,
    MODEL,
    MODES,
    TAGS,
    Mode,
    Query,
    Rows,
    TextVectors,
    row_id,
)
from services.filters import Condition, compile_filter, has_tag
from services.schema import SchemaContract
from services.search import SearchQuery, SearchResult, search
from services.store import MilvusStore, milvus_client


class TimedClient:
    """A pymilvus client that times its ``search`` and ``get`` calls (the raw Milvus calls
    inside our path); every other method is the wrapped client's."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, list[float]] = {"search": [], "get": []}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def search(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("search", self._client.search, args, kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed("get", self._client.get, args, kwargs)

    def _timed(self, name: str, call: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        tick = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.calls[name].append((time.perf_counter() - tick) * 1000.0)

    def reset(self) -> None:
        for values in self.calls.values():
            values.clear()


def open_store(uri: str, timeout: float, *, timed: bool = False) -> MilvusStore:
    """The benchmark's collection at ``uri``, opened; ``timed``: over a :class:`TimedClient`."""
    client = milvus_client(uri, timeout=timeout)
    if timed:
        client = TimedClient(client)
    contract = SchemaContract.current(MODEL, DIM)
    store = MilvusStore(client, COLLECTION, contract, uri=uri, timeout=timeout)
    return store.open()


@dataclass
class ModeResult:
    mode: Mode
    latencies: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    rpc_search: list[float] = field(default_factory=list)
    rpc_get: list[float] = field(default_factory=list)
    candidates: list[int] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    numpy_ms: list[float] = field(default_factory=list)
    faiss_ms: list[float] = field(default_factory=list)
    faiss_agree: list[float] = field(default_factory=list)
    qps: float = 0.0
    loaded_p50: float = 0.0
    loaded_p99: float = 0.0


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def hit_index(result: SearchResult) -> list[int]:
    return [int(Path(hit.path).stem) for hit in result.hits]


def _ms_since(tick: float) -> float:
    return (time.perf_counter() - tick) * 1000.0


def measure(
    store: MilvusStore,
    rows: Rows,
    mask: Mask,
    queries: list[Query],
    radius: int,
    top_k: int,
    faiss: Faiss | None,
) -> list[ModeResult]:
    """Every mode, one query at a time: our search path, the exact answer, faiss's answer.
    ``store`` runs over a :class:`TimedClient`."""
    timer = store.client
    assert isinstance(timer, TimedClient), "measure() needs a store opened with timed=True"
    embedder = TextVectors(queries)
    results = []
    for mode in MODES:
        result = ModeResult(mode)
        for k in range(min(5, len(queries))):  # warm up
            search(store, embedder, mode.build(k, queries[k], radius, top_k))
        # The Milvus queries run back to back; the in-process answers follow, so that their
        # scans (2 GB of vectors at 1M rows) do not evict the server's caches between queries.
        answers = []
        for k, q in enumerate(queries):
            query = mode.build(k, q, radius, top_k)
            timer.reset()
            tick = time.perf_counter()
            found = search(store, embedder, query)
            result.latencies.append(_ms_since(tick))
            for stage, ms in found.stage_ms.items():
                result.stages.setdefault(stage, []).append(ms)
            result.rpc_search.append(sum(timer.calls["search"]))
            result.rpc_get.append(sum(timer.calls["get"]))
            result.candidates.append(found.candidates)
            answers.append(found)
        for q, found in zip(queries, answers, strict=True):
            tick = time.perf_counter()
            truth = exact(mode.name, q, rows, mask, radius, top_k)
            result.numpy_ms.append(_ms_since(tick))
            result.recall.append(recall_at_k(hit_index(found), truth))
            if faiss is not None:
                tick = time.perf_counter()
                answer = faiss.answer(mode.name, q, radius, top_k)
                result.faiss_ms.append(_ms_since(tick))
                result.faiss_agree.append(recall_at_k(answer, truth))
        print(
            f"{mode.name}: p50 {percentile(result.latencies, 50):.1f} ms, "
            f"p99 {percentile(result.latencies, 99):.1f} ms, "
            f"recall {statistics.fmean(result.recall):.4f}",
            flush=True,
        )
        results.append(result)
    return results


# -- concurrent clients ----------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(uri: str, queries: list[Query], radius: int, top_k: int) -> None:
    _WORKER["store"] = open_store(uri, 60)
    _WORKER["queries"] = queries
    _WORKER["embedder"] = TextVectors(queries)
    _WORKER["radius"], _WORKER["top_k"] = radius, top_k


def _worker_run(job: tuple[str, list[int]]) -> list[float]:
    name, numbers = job
    mode = next(m for m in MODES if m.name == name)
    latencies = []
    for k in numbers:
        query = mode.build(k, _WORKER["queries"][k], _WORKER["radius"], _WORKER["top_k"])
        tick = time.perf_counter()
        search(_WORKER["store"], _WORKER["embedder"], query)
        latencies.append(_ms_since(tick))
    return latencies


def concurrent(
    uri: str, queries: list[Query], clients: int, radius: int, top_k: int
) -> dict[str, tuple[float, list[float]]]:
    """Per mode: (queries per second, latencies) with ``clients`` processes, each with its
    own client, running all queries between them."""
    out: dict[str, tuple[float, list[float]]] = {}
    context = multiprocessing.get_context("spawn")
    with context.Pool(clients, _worker_init, (uri, queries, radius, top_k)) as pool:
        pool.map(_worker_run, [("phash", [k]) for k in range(clients)])  # warm every client
        for mode in MODES:
            jobs = [(mode.name, list(range(c, len(queries), clients))) for c in range(clients)]
            tick = time.perf_counter()
            parts = pool.map(_worker_run, jobs)
            wall = time.perf_counter() - tick
            out[mode.name] = (len(queries) / wall, [x for part in parts for x in part])
    return out


# -- raw calls and the other paths -----------------------------------------------------------


def time_probes(
    store: MilvusStore, queries: list[Query], radius: int, rows: int
) -> dict[str, float]:
    """Raw Milvus calls that split the hybrid's first stage, p50 ms: the metadata filter alone
    (a count(*) with it) and a tag filter alone, the range search with 1 and with 8 query
    variants (no filter), with 8 and the filter, a ``get`` of 1 and of 20 ids; and a search by
    a stored image's id (``services.search``: it reads the row's signals first)."""
    client = store.client
    expr = compile_filter(FILTER)
    tag = compile_filter([has_tag(TAGS[0])])
    params = {"metric_type": "HAMMING", "params": {"radius": radius + 1}}
    ids = [row_id(k) for k in range(20)]

    def stored(k: int) -> str:
        return row_id(k * 7919 % rows)

    def range_search(q: Query, variants: int, where: str = "") -> Any:
        return client.search(
            COLLECTION, data=list(q.variants[:variants]), anns_field="phash",
            search_params=params, limit=CANDIDATE_LIMIT, filter=where, output_fields=HIT_FIELDS,
        )  # fmt: skip

    calls: dict[str, Callable[[int, Query], Any]] = {
        "filter_count": lambda k, q: client.query(
            COLLECTION, filter=expr, output_fields=["count(*)"]
        ),
        "tag_count": lambda k, q: client.query(COLLECTION, filter=tag, output_fields=["count(*)"]),
        "range_1": lambda k, q: range_search(q, 1),
        "range_8": lambda k, q: range_search(q, 8),
        "range_8_filter": lambda k, q: range_search(q, 8, expr),
        "get_1": lambda k, q: client.get(
            COLLECTION, ids=[stored(k)], output_fields=ROW_FIELDS_WITH_CLIP
        ),
        "get_20": lambda k, q: client.get(COLLECTION, ids=ids, output_fields=ROW_FIELDS),
        "by_id": lambda k, q: search(store, None, SearchQuery(id=stored(k), max_hamming=radius)),
    }
    out = {}
    for name, call in calls.items():
        times = []
        for k, q in enumerate(queries[: max(5, min(100, len(queries)))]):
            tick = time.perf_counter()
            call(k, q)
            times.append(_ms_since(tick))
        out[name] = percentile(times, 50)
    return out


Lean = dict[str, dict[str, tuple[list[float], float]]]


def time_lean(
    store: MilvusStore, rows: Rows, mask: Mask, queries: list[Query], radius: int, top_k: int
) -> tuple[Lean, float]:
    """The prototypes, per hybrid mode: latencies and recall against the exact answer; and the
    seconds that loading the hash cache took."""
    cache = HashCache(store)
    ways: dict[str, Callable[[Query, tuple[Condition, ...]], list[int]]] = {
        "two_trips": lambda q, where: two_trips_hybrid(store, q, where, radius, top_k),
        "hash_cache": lambda q, where: cache.search(q, where, radius, top_k),
        "milvus_filter": lambda q, where: milvus_filter_hybrid(store, q, where, radius, top_k),
    }
    out: Lean = {}
    for name, where in (("hybrid_filter", FILTER), ("hybrid", ())):
        out[name] = {}
        for way, run in ways.items():
            if way == "milvus_filter" and not where:
                continue  # without a filter it is services.search itself
            for q in queries[:5]:
                run(q, where)
            latencies, answers = [], []
            for q in queries:
                tick = time.perf_counter()
                answers.append(run(q, where))
                latencies.append(_ms_since(tick))
            recalls = [
                recall_at_k(found, exact(name, q, rows, mask, radius, top_k))
                for q, found in zip(queries, answers, strict=True)
            ]
            out[name][way] = (latencies, statistics.fmean(recalls))
    return out, cache.load_s
