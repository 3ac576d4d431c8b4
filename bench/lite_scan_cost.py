"""What one query page costs on Milvus Lite, and so what bounds a bulk read of a large collection.

    python -m bench.lite_scan_cost --home /tmp/lookalike-scale            # 1,000,000 rows
    python -m bench.lite_scan_cost --n 20000 --no-write                     # smoke run

On the synthetic collection of ``bench.bulk_read`` (built under ``--home`` if missing):

- position: a page of 256 ids whose first key lies after a given share of the rows (``id >=
  cut``), the cost of reaching a page by key;
- vectors: pages of 128-1536 rows from the first key, ids alone and ids with 512-d vectors, the
  cost of a page's vectors by its size;
- concurrency: four late pages one after another against two threads of two;
- partitions: whether the server lets a collection have any.

From the first two, the model of a keyset read of N rows by pages of k: N / k pages, the i-th
reached after i * k rows, so c N^2 / 2k for reaching them (c: seconds a row) plus N / k times a
page's vector cost; the table gives its time for the page sizes measured.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench import _report, _synthetic
from cli.stack.milvus_lite import EmbeddedMilvus
from cli.stack.net import free_port
from services.store import MilvusStore

CUTS = ("", "4", "8", "c", "f")
PAGES = (128, 256, 512, 768, 1024, 1536)


def best(call: Callable[[], object], tries: int = 3) -> float:
    """The fastest of ``tries`` calls, in seconds."""
    fastest = float("inf")
    for _ in range(tries):
        started = time.perf_counter()
        call()
        fastest = min(fastest, time.perf_counter() - started)
    return fastest


def page(store: MilvusStore, cut: str, rows: int, fields: list[str]) -> Callable[[], object]:
    return lambda: _synthetic.key_page(store, cut, rows, fields)


def partitions_allowed(store: MilvusStore) -> str:
    name = f"{store.collection}_partition_probe"
    client = store.client
    quiet = logging.getLogger("pymilvus")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # the refusal is the finding, not an error to log
    try:
        client.create_collection(name, dimension=8)
        client.create_partition(name, "probe")
    except Exception as exc:
        code = getattr(exc, "code", None)  # a gRPC error's status
        status = code() if callable(code) else type(exc).__name__
        return f"no (create_partition answers {getattr(status, 'name', status)})"
    finally:
        quiet.setLevel(level)
        if client.has_collection(name):
            client.drop_collection(name)
    return "yes"


def measure(store: MilvusStore, n: int) -> str:
    page(store, "", 256, ["id", "clip"])()  # warm-up
    position = []
    for cut in CUTS:
        before = store.count(f'id < "{cut}"') if cut else 0
        position.append((cut, before, best(page(store, cut, 256, ["id"]))))
    # c: seconds a row reached, the slope of a line through the cuts' times.
    slope = np.polyfit([p[1] for p in position], [p[2] for p in position], 1)[0]
    per_row = max(float(slope), 0.0)
    vectors = []
    for rows in PAGES:
        ids = best(page(store, "", rows, ["id"]))
        both = best(page(store, "", rows, ["id", "clip"]))
        vectors.append((rows, ids, both))
    late = page(store, CUTS[-1], 256, ["id"])
    alone = best(lambda: [late() for _ in range(4)], tries=1)

    def pair() -> None:
        threads = [threading.Thread(target=lambda: [late() for _ in range(2)]) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    paired = best(pair, tries=1)
    position_rows = [
        [f'`id >= "{cut}"`' if cut else "first key", f"{before:,}", f"{1000 * s:.1f} ms"]
        for cut, before, s in position
    ]
    vector_rows = []
    for rows, ids, both in vectors:
        extra = max(both - ids, 0.0)
        reach = per_row * n * n / (2 * rows)
        vector_rows.append(
            [
                f"{rows:,} ({rows * 2048 / 2**20:.2f} MiB)",
                f"{1000 * ids:.1f} ms",
                f"{1000 * both:.1f} ms",
                f"{1000 * extra:.1f} ms",
                f"{reach:.1f} + {n / rows * extra:.1f} = {reach + n / rows * extra:.1f} s",
            ]
        )
    return (
        f"{n:,} rows of 512-d vectors (`bench._synthetic`), one client, the best of three "
        "tries.\n\n"
        "A page of 256 ids, by where its first key lies:\n\n"
        + _report.markdown_table(["page from", "rows before it", "time"], position_rows)
        + f"\n\nSo reaching a page costs about {1e6 * per_row:.2f} us for every row before it.\n\n"
        "A page from the first key, by its size, and the model's time for a keyset read of "
        f"all {n:,} rows by such pages (reaching the pages + their vectors):\n\n"
        + _report.markdown_table(
            ["page rows", "ids", "ids + vectors", "vectors' cost", "modelled read"], vector_rows
        )
        + f'\n\nFour late pages (`id >= "{CUTS[-1]}"`) one after another: '
        f"{1000 * alone:.0f} ms; two threads of two: {1000 * paired:.0f} ms. "
        f"Partitions: {partitions_allowed(store)}."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="rows of the collection")
    parser.add_argument("--home", type=Path, help="Milvus Lite data folder (bench.bulk_read's)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as temporary:
        home = args.home or Path(temporary)
        with EmbeddedMilvus(home, free_port()) as server:
            store = _synthetic.ensure(server.uri, args.n)
            try:
                body = measure(store, args.n)
            finally:
                store.close()
    print(body)
    if not args.no_write:
        _report.write_section(
            "lite_scan_cost",
            "What a query page costs on Milvus Lite",
            body,
            packages=["pymilvus", "milvus-lite"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
