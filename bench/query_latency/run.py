"""``python -m bench.query_latency``: build (or reuse) the collection, time every mode, report."""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from threadpoolctl import threadpool_limits

from bench.query_latency import report
from bench.query_latency.exact import faiss_or_none
from bench.query_latency.measure import (
    concurrent,
    measure,
    open_store,
    percentile,
    time_lean,
    time_probes,
)
from bench.query_latency.workload import (
    Rows,
    World,
    all_rows,
    filter_mask,
    make_queries,
    records,
)
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.store import MilvusStore

INSERT_BATCH = 2_000
TIMEOUT_S = 600.0


def build(store: MilvusStore, world: World, count: int, seed: int) -> float:
    """Insert ``count`` rows into the (new, empty) collection; seconds taken."""
    started = time.perf_counter()
    for start, rows in all_rows(world, count, seed):
        batch = records(rows, start)
        for offset in range(0, len(batch), INSERT_BATCH):
            store.replace(batch[offset : offset + INSERT_BATCH])
        done = start + len(rows)
        rate = (time.perf_counter() - started) / done * 1000
        print(f"inserted {done:,} rows ({rate:.2f} ms a row)", flush=True)
    return time.perf_counter() - started


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.query_latency",
        description="Query latency on the embedded Milvus Lite server: hybrid, text, CLIP and "
        "pHash searches.",
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", type=Path, help="keep (and reuse) the database in this folder")
    parser.add_argument("--no-faiss", action="store_true", help="skip faiss even if installed")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the section from the stored results"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Returns 1 when Milvus's answers disagree with the exact ones (recall@k under 0.99)."""
    args = parse(argv)
    if args.render:
        report.write(None)
        return 0
    world = World.make(args.seed)
    with ExitStack() as stack:
        home = args.db or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        home.mkdir(parents=True, exist_ok=True)
        server = stack.enter_context(EmbeddedMilvus(home, free_port()))
        store = open_store(server.uri, TIMEOUT_S, timed=True)
        stack.callback(lambda: store.close())
        insert_s: float | None = None
        if store.count() != args.rows:
            store.drop()
            store.close()
            store = open_store(server.uri, TIMEOUT_S, timed=True)
            insert_s = build(store, world, args.rows, args.seed)
        print(f"{args.rows:,} rows stored; generating them in process", flush=True)
        rows = Rows.concat([part for _, part in all_rows(world, args.rows, args.seed)])
        mask = filter_mask(rows)
        queries = make_queries(world, rows, args.queries, args.seed)
        faiss = faiss_or_none(rows, mask, not args.no_faiss)
        with threadpool_limits(1):  # the in-process answers on one core, like one query
            results = measure(store, rows, mask, queries, args.radius, args.top_k, faiss)
        probes = time_probes(store, queries, args.radius, args.rows)
        lean, cache_s = time_lean(store, rows, mask, queries, args.radius, args.top_k)
        if args.clients > 0:
            loaded = concurrent(server.uri, queries, args.clients, args.radius, args.top_k)
            for result in results:
                result.qps, latencies = loaded[result.mode.name]
                result.loaded_p50 = percentile(latencies, 50)
                result.loaded_p99 = percentile(latencies, 99)
    settings = {k: getattr(args, k) for k in ("rows", "queries", "clients", "radius", "top_k")}
    summary = report.summarise(
        settings, results, probes, lean, cache_s, insert_s, float(mask.mean())
    )
    for paragraph in report.render(summary):
        print(paragraph + "\n")
    if not args.no_write:
        report.write(summary)
    agree = all(min(r.recall) >= 0.99 for r in results if r.recall)
    return 0 if agree else 1
