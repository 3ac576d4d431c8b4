"""Query latency on the embedded Milvus Lite server: hybrid, text, CLIP and pHash searches.

    python -m bench.query_latency --rows 100000 --db /work/benchdb/query100k
    python -m bench.query_latency --rows 1000000 --db /work/benchdb/query1m
    python -m bench.query_latency --rows 300 --queries 8 --clients 2 --no-write   # smoke run
    python -m bench.query_latency --render   # rewrite the section from docs/data/*.json

Synthetic rows (``workload``) are stored in an embedded Milvus Lite server and queried through
``services.search.search`` with ``QuerySignals``, as an app would (``measure``). Each mode runs
``--queries`` queries one at a time (p50/p99), then from ``--clients`` processes at once, each
with its own client (queries per second). The same queries run brute force in process (numpy,
and faiss when installed; ``exact``) to time the exact answer and to measure the agreement of
Milvus with it (recall@k); other hybrid paths run beside ours (``prototypes``). ``--db DIR``
keeps the database and reuses it (inserting is the slow part). Tables: ``report``.
"""

from bench.query_latency.run import main

__all__ = ["main"]
