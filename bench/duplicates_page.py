"""The Duplicates page as the collection grows: a kept result against a recompute on render.

``python -m bench.duplicates_page [--rows 10000 100000 1000000] [--old-up-to N] [--db DIR]
[--fill-seconds S] [--no-write]``: synthetic hash-only rows with planted groups
(``bench.dedup_collection``'s, one group of 2-6 per 50 rows) are stored in an embedded Milvus
Lite server, one collection per size (``--db DIR`` keeps them and reuses them on the next run;
``--fill-seconds S`` stops filling one after S seconds and measures it as it is, its group
members inserted first; its result is then computed from the same rows in memory). For each
size two Duplicates pages are driven with ``streamlit.testing``'s AppTest, side by side in one
run:

- **kept result** (this design, ``ui/views/duplicates.py``): the dedup is run once and its
  result kept in Redis (``services.kept_dedup``), as ``lookalike dedup`` does; then the page's
  first render in a fresh server process (caches cleared), its first render in a new session,
  and the median of re-renders in one session;
- **before** (the page as of commit BEFORE, read from git): the dedup runs inside the first
  render of every session; the same three figures, measured up to ``--old-up-to`` rows and
  projected beyond (linearly in rows, from the largest size measured).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from bench import _report
from bench._report import markdown_table
from bench.dedup_collection import chunks
from bench.ui_render import environment, timed
from services.dedup import DedupOptions, find_duplicates
from services.hamming_pairs import pairs_within
from services.keepers import parse_policy
from services.kept_dedup import KeptResult, RedisKeptResults
from services.records import ImageRecord
from services.store import HashScan, KeeperColumns, VectorStore

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "ui" / "views" / "duplicates.py"
PLOT = ROOT / "docs" / "img" / "duplicates_page.png"
BEFORE = "995ca07"  # the commit whose Duplicates page recomputed the dedup on render
SIZES = (10_000, 100_000, 1_000_000)
RADIUS = 8  # the page's default (LOOKALIKE_DEDUP_MAX_HAMMING)
WARM_RUNS = 5
INSERT_BATCH = 5_000


def collection_name(rows: int) -> str:
    return f"dups_{rows}"


# -- the rows -----------------------------------------------------------------------------------


def synthetic_rows(rows: int) -> list[ImageRecord]:
    return [record for chunk in chunks(rows) for record in chunk]


class MemoryHashes:
    """The few reads ``find_duplicates`` makes of a hash-only store, served from records in
    memory: for a size whose Milvus collection could not be filled in the time of a run."""

    collection = "memory"
    has_clip = False

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self._records = records

    def count(self, expr: str = "") -> int:
        return len(self._records)

    def iterate(self, expr: str = "", **_: Any) -> Iterator[ImageRecord]:
        return iter(())  # no row of the synthetic collection has several paths

    def scan_hashes(self, expr: str = "", **_: Any) -> HashScan:
        records = self._records
        codes = np.frombuffer(b"".join(r.phash for r in records), dtype=">u8").astype(np.uint64)
        variants = np.frombuffer(
            b"".join(b"".join(r.phash_dihedral) for r in records), dtype=">u8"
        ).astype(np.uint64)
        columns = KeeperColumns(
            [r.path for r in records],
            [r.format for r in records],
            np.array([(r.width, r.height, r.bytes) for r in records], dtype=np.int64),
            np.full(len(records), -1, dtype=np.int64),
        )
        return HashScan([r.id for r in records], codes, variants.reshape(-1, 7), columns)


def members_first(records: list[ImageRecord], radius: int) -> list[ImageRecord]:
    """``records`` with every row that is in a pair within ``radius`` first: a collection
    filled only in part still holds every row its duplicate groups name."""
    scan = MemoryHashes(records).scan_hashes()
    found = pairs_within(scan.codes, radius, variants=scan.variants)
    paired = np.zeros(len(records), dtype=bool)
    paired[found.left] = paired[found.right] = True
    order = np.concatenate([np.flatnonzero(paired), np.flatnonzero(~paired)])
    return [records[i] for i in order.tolist()]


def build(
    uri: str, rows: int, log: Callable[[str], None] = print, *, seconds: float | None = None
) -> Any:
    """The collection of ``rows`` synthetic rows, filled (or its filling resumed) group members
    first, for at most ``seconds`` (None: until full); returns the store."""
    from services.schema import SchemaContract
    from services.store import MilvusStore

    contract = SchemaContract.current(None, None)
    store = MilvusStore.connect(uri, collection_name(rows), contract, timeout=600)
    stored = store.count()
    if stored >= rows or seconds == 0:
        return store
    ordered = members_first(synthetic_rows(rows), RADIUS)
    if stored:
        present = store.existing_ids([r.id for r in ordered])
        ordered = [r for r in ordered if r.id not in present]
    started = time.perf_counter()
    for start in range(0, len(ordered), INSERT_BATCH):
        if seconds is not None and time.perf_counter() - started > seconds:
            break
        store.replace(ordered[start : start + INSERT_BATCH])
        done = stored + min(len(ordered), start + INSERT_BATCH)
        seconds = time.perf_counter() - started
        log(f"{collection_name(rows)}: {done:,} of {rows:,} rows, {seconds:.0f} s")
    return store


# -- the two designs ----------------------------------------------------------------------------


def page_before(folder: Path) -> Path:
    """The Duplicates page as it was at commit BEFORE (it recomputed the dedup on render)."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE}:ui/views/duplicates.py"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    path = folder / "duplicates_before.py"
    path.write_text(source)
    return path


def _app(page: Path) -> Any:
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(page), default_timeout=900)


def _checked(app: Any, where: str) -> Any:
    if app.exception:
        raise RuntimeError(f"{where}: {app.exception[0].value}")
    if app.error:
        raise RuntimeError(f"{where}: {app.error[0].value}")
    return app


def _groups_shown(app: Any) -> int:
    summary = next((m.value for m in app.markdown if "groups**" in m.value), "")
    return int(summary.split("**")[1].split()[0]) if summary else -1


@dataclass(frozen=True)
class Renders:
    """A page's first render in a fresh server process (no cached connection or result), its
    first render in a new session (server caches warm), and its re-renders in one session."""

    fresh_s: float
    session_s: float
    warm_s: list[float]
    groups: int
    stale: int  # groups on the page shown with members gone (none: every row is in Milvus)

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm_s)


def renders(page: Path, where: str) -> Renders:
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()
    app = _app(page)
    fresh_s = timed(app.run)
    _checked(app, where)
    warm_s = [timed(app.run) for _ in range(WARM_RUNS)]
    _checked(app, where)
    session = _app(page)
    session_s = timed(session.run)
    _checked(session, where)
    stale = sum("gone since the run" in m.value for m in session.markdown) + sum(
        "changed since the dedup ran" in i.value for i in session.info
    )
    return Renders(fresh_s, session_s, warm_s, _groups_shown(session), stale)


# -- one size -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    rows: int
    stored: int  # rows in the Milvus collection (fewer: filled in part, group members first)
    computed_from: str
    dedup_s: float
    groups: int
    kept_bytes: int
    kept: Renders
    before: Renders | None


def measure_size(
    uri: str,
    redis_url: str,
    home: Path,
    rows: int,
    before_page: Path | None,
    fill_seconds: float | None = None,
) -> Measured:
    store = build(uri, rows, seconds=fill_seconds)
    stored = store.count()
    source: VectorStore = store
    computed_from = "Milvus Lite (as Recompute does)"
    if stored < rows:
        source = cast(VectorStore, MemoryHashes(synthetic_rows(rows)))
        computed_from = "rows in memory (the collection is filled in part)"
    options = DedupOptions(max_hamming=RADIUS)
    started = time.perf_counter()
    report = find_duplicates(source, parse_policy([]), options)
    dedup_s = time.perf_counter() - started
    result = KeptResult.of(
        report,
        collection=store.collection,
        instance=store.instance,
        options=options,
        policy=[],
        seconds=dedup_s,
        origin="cli",
    )
    RedisKeptResults.from_url(redis_url, store.collection).save(result)
    store.close()
    env = {
        "LOOKALIKE_MILVUS_URI": uri,
        "LOOKALIKE_REDIS_URL": redis_url,
        "LOOKALIKE_COLLECTION": collection_name(rows),
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_CLIP_MODEL": "none",
        "LOOKALIKE_DEDUP_MAX_HAMMING": str(RADIUS),
    }
    with environment(env):
        kept = renders(PAGE, f"kept result, {rows} rows")
        before = None if before_page is None else renders(before_page, f"before, {rows} rows")
    print(f"{rows:,} rows: dedup {dedup_s:.1f} s, kept {kept}, before {before}", flush=True)
    return Measured(
        rows,
        stored,
        computed_from,
        dedup_s,
        len(report.groups),
        len(result.table.encode()),
        kept,
        before,
    )


# -- the report ---------------------------------------------------------------------------------


def projected_before(sizes: Sequence[Measured]) -> dict[int, float]:
    """The design before's first render of a session, projected linearly in rows from the
    largest size measured, for the sizes it was not measured at."""
    measured = [m for m in sizes if m.before is not None]
    if not measured:
        return {}
    largest = max(measured, key=lambda m: m.rows)
    assert largest.before is not None
    per_row = largest.before.session_s / largest.rows
    return {m.rows: per_row * m.rows for m in sizes if m.before is None}


def table(sizes: Sequence[Measured]) -> str:
    projected = projected_before(sizes)
    header = [
        "rows",
        "groups (shown: kept / before)",
        "kept result in Redis",
        "kept: first render, fresh process",
        "kept: first render, new session",
        f"kept: re-render (median of {WARM_RUNS})",
        "before: first render of every session (dedup on render)",
        f"before: re-render (median of {WARM_RUNS})",
        "dedup alone (Recompute)",
    ]
    body = []
    for m in sizes:
        if m.before is not None:
            old_first, old_warm = f"{m.before.session_s:.2f} s", f"{m.before.warm_median:.2f} s"
        else:
            old_first, old_warm = f"~{projected[m.rows]:.0f} s (projected)", "-"
        body.append(
            [
                f"{m.rows:,}" + ("" if m.stored >= m.rows else f" ({m.stored:,} in Milvus)"),
                f"{m.groups:,} ({m.kept.groups:,} / {_shown(m.before)})",
                f"{m.kept_bytes / 2**20:.1f} MiB",
                f"**{m.kept.fresh_s:.2f} s**",
                f"{m.kept.session_s:.2f} s",
                f"**{m.kept.warm_median:.2f} s** ({_spread(m.kept.warm_s)})",
                old_first,
                old_warm,
                f"{m.dedup_s:.1f} s from {m.computed_from}",
            ]
        )
    return markdown_table(header, body)


def _shown(renders: Renders | None) -> str:
    return "-" if renders is None else f"{renders.groups:,}"


def _spread(seconds: Sequence[float]) -> str:
    return f"{min(seconds):.2f}-{max(seconds):.2f}"


def plot(sizes: Sequence[Measured], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [m.rows for m in sizes]
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.plot(
        rows, [m.kept.fresh_s for m in sizes], "o-", label="kept: first render, fresh process"
    )
    axes.plot(
        rows, [m.kept.session_s for m in sizes], "s-", label="kept: first render, new session"
    )
    axes.plot(rows, [m.kept.warm_median for m in sizes], "^-", label="kept: re-render")
    old = [(m.rows, m.before.session_s) for m in sizes if m.before is not None]
    if old:
        axes.plot(
            *zip(*old, strict=True), "x-", color="C3", label="before: first render of a session"
        )
        projected = sorted(projected_before(sizes).items())
        if projected:
            line = [old[-1], *projected]
            axes.plot(*zip(*line, strict=True), "x:", color="C3", label="before: projected")
    axes.axhline(5, color="grey", linestyle="--", linewidth=0.8)
    axes.axhline(1, color="grey", linestyle=":", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("rows in the collection")
    axes.set_ylabel("seconds (server side, AppTest)")
    axes.set_title("Duplicates page: kept result vs dedup on render")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def body(sizes: Sequence[Measured], loads: tuple[float, float]) -> str:
    fresh = max(sizes, key=lambda m: m.rows)
    verdict = (
        f"At {fresh.rows:,} rows: first render from the kept result {fresh.kept.fresh_s:.2f} s "
        f"(target 5 s: {'met' if fresh.kept.fresh_s <= 5 else 'not met'}), re-render "
        f"{fresh.kept.warm_median:.2f} s (target 1 s: "
        f"{'met' if fresh.kept.warm_median < 1 else 'not met'})."
    )
    return (
        f"Hash-only synthetic rows (`bench.dedup_collection`'s: one planted group of 2-6 per 50 "
        f"rows), pHash radius {RADIUS}, keeper policy by default; both designs run in this one "
        f"process, on the same collections, one after the other. Measured under shared load "
        f"(other engineers' experiments on the same cores: load average {loads[0]:.1f} at the "
        f"start, {loads[1]:.1f} at the end).\n\n{table(sizes)}\n\n"
        f"![growth curve](img/{PLOT.name})\n\n{verdict}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--old-up-to",
        type=int,
        default=100_000,
        help="measure the design before up to this many rows (projected beyond)",
    )
    parser.add_argument("--db", type=Path, help="keep (and reuse) the collections in this folder")
    parser.add_argument("--build-only", action="store_true", help="fill the collections, stop")
    parser.add_argument(
        "--fill-seconds",
        type=float,
        help="fill each collection for at most this long, then measure it as it is "
        "(group members go in first); default: until full",
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from streamlit import logger

    from cli.stack.milvus_lite import EmbeddedMilvus
    from cli.stack.net import free_port
    from cli.stack.redis_server import RedisServer

    logger.set_log_level("error")
    logger.get_logger("streamlit.runtime.scriptrunner_utils.script_run_context").disabled = True
    loads = [os.getloadavg()[0]]
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dups-page-")))
        server = stack.enter_context(EmbeddedMilvus(args.db or root / "milvus", free_port()))
        if args.build_only:
            for rows in args.rows:
                build(server.uri, rows, seconds=args.fill_seconds).close()
            return 0
        redis_url = f"redis://127.0.0.1:{free_port()}/0"
        redis = RedisServer(redis_url, root / "redis")
        redis.start()
        stack.callback(redis.stop)
        before = page_before(root)
        sizes = [
            measure_size(
                server.uri,
                redis_url,
                root / "home",
                rows,
                before if rows <= args.old_up_to else None,
                args.fill_seconds,
            )
            for rows in sorted(args.rows)
        ]
    loads.append(os.getloadavg()[0])
    text = body(sizes, (loads[0], loads[-1]))
    print(text)
    # Each page shows the groups of its dedup: the kept result's are the ones computed.
    agree = all(
        m.kept.groups == m.groups
        and not m.kept.stale
        and (m.before is None or m.before.groups == m.groups)
        for m in sizes
    )
    if not args.no_write:
        plot(sizes, PLOT)
        _report.write_section(
            "duplicates_page",
            "Duplicates page as the collection grows",
            text,
            packages=["streamlit", "pymilvus", "milvus-lite", "redis"],
        )
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
