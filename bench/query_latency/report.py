"""``bench.query_latency``'s tables: one summary per collection size, stored as JSON in
docs/data/query_latency.json, rendered into its section of docs/benchmarks.md."""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import _report
from bench.query_latency.measure import Lean, ModeResult, percentile

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "data" / "query_latency.json"
TARGET_P50_MS, TARGET_P99_MS = 20.0, 60.0

MAIN_HEADER = [
    "mode", "p50 ms", "p99 ms", "raw Milvus search p50 ms", "mean candidates",
    "QPS, {clients} clients", "p50 / p99 ms under load", "numpy brute force p50 ms",
    "faiss p50 ms", "recall@{top_k} vs exact (faiss)",
]  # fmt: skip
STAGE_HEADER = [
    "mode", "total", "range search RPC (Hamming, 8 variants)", "candidates to records",
    "metadata filter on the hits, in process", "cosine rerank", "hydration RPC (get the top-k)",
    "hydration to records",
]  # fmt: skip
LEAN_HEADER = [
    "mode", "services.search p50 / p99 ms", "A: two round trips, p50 / p99 ms (recall)",
    "B: pHashes in process, p50 / p99 ms (recall)",
    "C: the filter inside Milvus's range search, p50 / p99 ms (recall)",
]  # fmt: skip
PROBES = {
    "filter_count": "the metadata filter alone, as a count(*)",
    "tag_count": "a tag filter alone (`array_contains`), as a count(*)",
    "range_1": "range search, 1 query variant, no filter",
    "range_8": "range search, 8 query variants, no filter",
    "range_8_filter": "range search, 8 query variants, the filter inside Milvus",
    "get_1": "`get` of 1 whole row",
    "get_20": "`get` of 20 whole rows",
    "by_id": "search by a stored image's id (hybrid: the row's signals are read first)",
}
WAYS = ("two_trips", "hash_cache", "milvus_filter")


def _ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def _pair(values: Sequence[float]) -> list[float]:
    return [percentile(values, 50), percentile(values, 99)]


def _p50_p99(values: Sequence[float]) -> str:
    return f"{_ms(percentile(values, 50))} / {_ms(percentile(values, 99))}"


def _main_row(r: ModeResult) -> list[str]:
    recall = f"{statistics.fmean(r.recall):.4f}"
    if r.faiss_agree:
        recall += f" ({statistics.fmean(r.faiss_agree):.4f})"
    return [
        r.mode.label,
        _ms(percentile(r.latencies, 50)),
        _ms(percentile(r.latencies, 99)),
        _ms(percentile(r.rpc_search, 50)),
        f"{statistics.fmean(r.candidates):.1f}",
        f"{r.qps:.0f}" if r.qps else "-",
        f"{_ms(r.loaded_p50)} / {_ms(r.loaded_p99)}" if r.qps else "-",
        _ms(percentile(r.numpy_ms, 50)),
        _ms(percentile(r.faiss_ms, 50)) if r.faiss_ms else "-",
        recall,
    ]


def _stage_row(r: ModeResult) -> list[str]:
    search_rpc, get_rpc = percentile(r.rpc_search, 50), percentile(r.rpc_get, 50)

    def stage(name: str, minus: float = 0.0) -> str:
        return _ms(percentile(r.stages[name], 50) - minus) if name in r.stages else "none"

    return [
        r.mode.label,
        _ms(percentile(r.latencies, 50)),
        _ms(search_rpc),
        _ms(percentile(r.stages.get("hamming_ms", []), 50) - search_rpc),
        stage("filter_ms"),
        _ms(percentile(r.stages.get("rerank_ms", []), 50)),
        _ms(get_rpc) if "fetch_ms" in r.stages else "none",
        stage("fetch_ms", get_rpc),
    ]


def _lean_row(r: ModeResult, ways: dict[str, tuple[list[float], float]]) -> list[str]:
    cells = [r.mode.label, _p50_p99(r.latencies)]
    for way in WAYS:
        if way in ways:
            latencies, recall = ways[way]
            cells.append(f"{_p50_p99(latencies)} ({recall:.4f})")
        else:
            cells.append("(no filter: services.search itself)")
    return cells


def summarise(
    settings: dict[str, Any],
    results: list[ModeResult],
    probes: dict[str, float],
    lean: Lean,
    cache_s: float,
    insert_s: float | None,
    selectivity: float,
) -> dict[str, Any]:
    """Everything the section shows for one collection size (stored as JSON). ``settings``:
    rows, queries, clients, radius and top_k of the run."""
    by_name = {r.mode.name: r for r in results}
    hybrid = by_name["hybrid_filter"]
    p50, p99 = percentile(hybrid.latencies, 50), percentile(hybrid.latencies, 99)
    rows = settings["rows"]
    return {
        **settings,
        "command": sys.argv[1:],
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "insert": f"{insert_s:.0f} s ({insert_s / rows * 1000:.2f} ms a row)"
        if insert_s is not None
        else "reused",
        "selectivity": selectivity,
        "probes": probes,
        "cache_s": cache_s,
        "hybrid_p50": p50,
        "hybrid_p99": p99,
        "target_met": p50 < TARGET_P50_MS and p99 < TARGET_P99_MS,
        "paths": {
            name: {
                "services": _pair(by_name[name].latencies),
                **{way: _pair(values[0]) for way, values in ways.items()},
            }
            for name, ways in lean.items()
        },
        "tables": {
            "main": [_main_row(r) for r in results],
            "stages": [_stage_row(r) for r in results if r.mode.name in lean],
            "lean": [_lean_row(r, lean[r.mode.name]) for r in results if r.mode.name in lean],
        },
    }


def render(summary: dict[str, Any]) -> list[str]:
    """The paragraphs of one collection size: its settings line and its four tables."""
    head = [h.format(**summary) for h in MAIN_HEADER]
    tables = summary["tables"]
    verdict = "met" if summary["target_met"] else "**not met**"
    probes = [
        [
            label.replace("hybrid:", f"hybrid, radius {summary['radius']}:"),
            _ms(summary["probes"][k]),
        ]
        for k, label in PROBES.items()
        if k in summary["probes"]
    ]
    return [
        f"**{summary['rows']:,} rows** (measured {summary.get('measured_at', '?')} by "
        f"`python -m bench.query_latency {' '.join(summary['command'])}`)"
        f": {summary['queries']} queries a mode, radius "
        f"{summary['radius']}, top {summary['top_k']}; insert {summary['insert']}; the filter "
        f"keeps {summary['selectivity']:.1%} of the rows. Hybrid target (p50 < "
        f"{TARGET_P50_MS:.0f} ms, p99 < {TARGET_P99_MS:.0f} ms): {verdict} "
        f"({summary['hybrid_p50']:.1f} / {summary['hybrid_p99']:.1f} ms).",
        _report.markdown_table(head, tables["main"]),
        "Raw Milvus calls alone:",
        _report.markdown_table(["call", "p50 ms"], probes),
        "Hybrid stages, p50 ms each:",
        _report.markdown_table(STAGE_HEADER, tables["stages"]),
        f"Other hybrid paths (loading the pHashes for B took {summary['cache_s']:.1f} s):",
        _report.markdown_table(LEAN_HEADER, tables["lean"]),
    ]


def write(summary: dict[str, Any] | None) -> None:
    """Store ``summary`` by collection size and rewrite the section with every stored size
    (``None``: only rewrite it, crediting the command that measured the largest size)."""
    stored: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if summary is not None:
        stored[str(summary["rows"])] = summary
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(stored, indent=1) + "\n")
    if not stored:
        return
    parts = [part for key in sorted(stored, key=int) for part in render(stored[key])]
    big = stored[max(stored, key=int)]
    argv = None if summary is not None else big.get("command", ["--rows", str(big["rows"])])
    _report.write_section(
        "query_latency",
        "Query latency on Milvus Lite: hybrid, text, CLIP, pHash",
        "\n\n".join(parts),
        packages=["pymilvus", "milvus-lite", "numpy", "faiss-cpu"],
        argv=argv,
    )
