"""How long the UI's pages take to render on a 10,000-image collection (server side).

``python -m bench.ui_render [--images N|DIR] [--no-write]``: N small photo-like JPEGs (default
10,000; 320x240) are generated, one planted group per 20 images (a base with 1-3 resized,
recompressed or mirrored copies), or the images of DIR are used as they are. They are hashed as
hash-only ingestion does (``analyze_batch``), given synthetic clustered 512-d CLIP-like vectors
(copies close to their base) and stored in an embedded Milvus Lite server; the indexing is
recorded in a Redis ledger as one finished job; the collection is clustered (k-means, k=20,
PCA map) and its map saved, as the Clusters page does, and deduplicated with its result kept,
as ``lookalike dedup`` does. Then every page of ``ui/app.py`` is driven with
``streamlit.testing``'s AppTest: the first render (cold: connections, the kept dedup result,
thumbnails), the first render in a new session once those caches are warm, and the median of 5
re-renders in the same session (what each interaction costs). ``LOOKALIKE_CLIP_MODEL=none``: no
model is loaded; a stored-image search reranks with the stored vector (the time to embed an
uploaded image is in bench/clip_speed).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from bench import _report
from bench._report import markdown_table

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "ui" / "app.py"
COLLECTION = "bench_ui"
DIM = 512
MODEL = "bench-clip-512"
STRIDE = 20  # one planted group per 20 images
COPIES = ("resized", "recompressed", "mirrored")
TOPICS = 20
WARM_RUNS = 5
BATCH = 500  # images analysed and upserted at a time
TARGET_S = 1.0
_NAME = re.compile(r"^(\d{6})(?:_([a-z]+))?$")
# CLIP-like vectors: A * shared direction + B * topic centre + noise of norm S, normalised;
# a copy is its base plus noise of norm _COPY_NOISE (cosine ~0.98 to its base).
_A, _B, _S, _COPY_NOISE = 0.5, 0.7, 0.6, 0.2

Floats = npt.NDArray[np.float32]


# -- the images ---------------------------------------------------------------------------------


def _copies_in_group(group: int) -> int:
    return 1 + group % len(COPIES)  # groups of 2, 3 and 4 images


def generate(folder: Path, count: int) -> list[Path]:
    """``count`` JPEGs in ``folder``: ``NNNNNN.jpg``, and ``NNNNNN_<copy>.jpg`` for the copies of
    base NNNNNN (the first image of every run of STRIDE)."""
    from testkit.imagegen import make_photo_like

    folder.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    base: Image.Image | None = None
    for index in range(count):
        group, position = divmod(index, STRIDE)
        if 1 <= position <= _copies_in_group(group) and base is not None:
            kind = COPIES[position - 1]
            path = folder / f"{group * STRIDE:06d}_{kind}.jpg"
            if kind == "resized":
                small = base.resize(
                    (base.width * 3 // 5, base.height * 3 // 5), Image.Resampling.LANCZOS
                )
                small.save(path, "JPEG", quality=90)
            elif kind == "recompressed":
                base.save(path, "JPEG", quality=40)
            else:
                ImageOps.mirror(base).save(path, "JPEG", quality=90)
        else:
            path = folder / f"{index:06d}.jpg"
            image = make_photo_like(index, (320, 240))
            image.save(path, "JPEG", quality=90)
            if position == 0:
                base = image
        paths.append(path)
        if (index + 1) % 2000 == 0:
            print(f"generated {index + 1} images", flush=True)
    return paths


def image_files(folder: Path) -> list[Path]:
    suffixes = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())


# -- the vectors --------------------------------------------------------------------------------


def _unit(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    unit: npt.NDArray[np.float64] = x / np.linalg.norm(x, axis=-1, keepdims=True)
    return unit


def vectors_for(paths: Sequence[Path], seed: int = 0) -> dict[str, Floats]:
    """A CLIP-like vector per path: the generated copies lie close to their base's vector; any
    other file is its own base. Bases fall in TOPICS clusters."""
    rng = np.random.default_rng([seed, 1])
    shared = _unit(rng.standard_normal(DIM))
    topics = _unit(rng.standard_normal((TOPICS, DIM)))
    out: dict[str, Floats] = {}
    for order, path in enumerate(paths):
        match = _NAME.match(path.stem)
        base = int(match.group(1)) if match else order
        kind = match.group(2) if match else None
        noise = np.random.default_rng([seed, 2, base]).standard_normal(DIM) * (_S / np.sqrt(DIM))
        vector = _unit(_A * shared + _B * topics[base % TOPICS] + noise)
        if kind is not None:
            extra = np.random.default_rng(
                [seed, 3, base, COPIES.index(kind) if kind in COPIES else 9]
            )
            vector = _unit(vector + extra.standard_normal(DIM) * (_COPY_NOISE / np.sqrt(DIM)))
        out[str(path)] = vector.astype(np.float32)
    return out


# -- the stack ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Indexed:
    rows: int
    ids_by_name: dict[str, str]
    analyze_s: float
    insert_s: float
    cluster_s: float


def index(
    store: Any, ledger: Any, paths: Sequence[Path], home: Path, *, max_pixels: int
) -> Indexed:
    """Hash ``paths`` as hash-only ingestion does, attach the synthetic vectors, store them,
    record it all as one finished ledger job, then cluster and save the map."""
    from services import cluster_map
    from services.clusters import cluster_collection
    from services.pipeline import analyze_batch

    vectors = vectors_for(paths)
    job = "bench-ui-render"
    ledger.create_job(job, collection=COLLECTION, roots=[str(paths[0].parent)], options={})
    ledger.set_counts(job, found=len(paths), queued=len(paths), skipped=0)
    ids: dict[str, str] = {}
    analyze_s = insert_s = 0.0
    for start in range(0, len(paths), BATCH):
        batch = paths[start : start + BATCH]
        tick = time.perf_counter()
        outcome = analyze_batch(batch, None, max_pixels=max_pixels, source="bench")
        records = [replace(r, clip=vectors[r.path]) for r in outcome.records]
        analyze_s += time.perf_counter() - tick
        tick = time.perf_counter()
        store.upsert(records)
        insert_s += time.perf_counter() - tick
        ids.update({Path(r.path).name: r.id for r in records})
        stats = {str(p): f"{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in batch}
        failed = {f.path: f.error for f in outcome.failures}
        ledger.record_batch(
            job,
            COLLECTION,
            stored={k: v for k, v in stats.items() if k not in failed},
            failed=failed,
        )
        print(f"stored {start + len(batch)} of {len(paths)}", flush=True)
    ledger.done_producing(job)
    tick = time.perf_counter()
    report = cluster_collection(store, k=min(TOPICS, max(2, store.count() // 3)), projection="pca")
    cluster_map.save(report, cluster_map.map_file(home, COLLECTION))
    cluster_s = time.perf_counter() - tick
    return Indexed(store.count(), ids, analyze_s, insert_s, cluster_s)


def keep_dedup(store: Any, redis_url: str) -> None:
    """Run the dedup once and keep its result, as `lookalike dedup` does: the Duplicates page
    shows the kept result (bench.duplicates_page compares that with a dedup on every render)."""
    from services.dedup import DedupOptions, find_duplicates
    from services.keepers import parse_policy
    from services.kept_dedup import KeptResult, RedisKeptResults

    options = DedupOptions()
    started = time.perf_counter()
    report = find_duplicates(store, parse_policy([]), options)
    result = KeptResult.of(
        report,
        collection=store.collection,
        instance=store.instance,
        options=options,
        policy=[],
        seconds=time.perf_counter() - started,
        origin="cli",
    )
    RedisKeptResults.from_url(redis_url, store.collection).save(result)


@contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """os.environ with only ``env`` as LOOKALIKE_* settings (the UI reads them from there)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("LOOKALIKE_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


# -- the pages ----------------------------------------------------------------------------------


@dataclass
class Row:
    page: str
    cold_s: float
    fresh_s: float | None  # first render in a new session, server caches warm
    warm_s: list[float]
    shown: str

    @property
    def warm_median(self) -> float:
        return statistics.median(self.warm_s)


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def new_app(page: str | None = None) -> Any:
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(APP), default_timeout=600)
    if page is not None:
        app.switch_page(f"views/{page}.py")
    return app


def check(app: Any, where: str) -> None:
    if app.exception:
        raise RuntimeError(f"{where}: {app.exception[0].value}")
    if app.error:
        raise RuntimeError(f"{where}: {app.error[0].value}")


def markdown_with(app: Any, word: str) -> str:
    return next((m.value for m in app.markdown if word in m.value), "")


def images_shown(app: Any) -> int:
    return len(app.get("image"))


def warm(app: Any, where: str) -> list[float]:
    times = []
    for _ in range(WARM_RUNS):
        times.append(timed(app.run))
        check(app, where)
    return times


Step = Callable[[Any], Any]


@dataclass(frozen=True)
class Scenario:
    """A page, the widget changes that lead to the view timed (the last one is timed), and how
    to say what the view showed."""

    label: str
    page: str | None  # None: the default page, Search
    steps: tuple[Step, ...]
    describe: Callable[[Any], str]


def scenarios(query_id: str) -> list[Scenario]:
    def stored(app: Any) -> None:
        app.radio(key="search-mode").set_value("Stored image")

    def by_id(app: Any) -> None:
        app.text_input(key="search-id").input(query_id)

    def clip_only(app: Any) -> None:
        app.toggle(key="search-use-hamming").set_value(False)

    def a_cluster(app: Any) -> None:
        app.radio(key="clusters-view").set_value("A cluster")

    return [
        Scenario("Search, no query yet", None, (), lambda app: "the query form"),
        Scenario("Search by stored image (hybrid)", None, (stored, by_id), _describe_search),
        Scenario(
            "Search by stored image, CLIP only", None, (stored, by_id, clip_only), _describe_search
        ),
        Scenario("Duplicates", "duplicates", (), _describe_duplicates),
        Scenario("Clusters (map)", "clusters", (), _describe_clusters),
        Scenario("Clusters, A cluster view", "clusters", (a_cluster,), _describe_cluster),
        Scenario("Ingest", "ingest", (), _describe_ingest),
        Scenario("Collection", "collection", (), _describe_collection),
    ]


def _timed_view(app: Any, scenario: Scenario, *, switch: bool) -> float:
    """Lead ``app`` to the scenario's view; returns the seconds of its last run."""
    if switch and scenario.page is not None:
        app.switch_page(f"views/{scenario.page}.py")
    elif switch:
        app.switch_page("views/search.py")
    if not scenario.steps:
        return timed(app.run)
    app.run()
    for step in scenario.steps[:-1]:
        step(app)
        app.run()
    scenario.steps[-1](app)
    return timed(app.run)


def measure(query_id: str) -> list[Row]:
    """Every view: first render in the server process, first render of a new session, warm
    re-renders of the same session."""
    import streamlit as st
    from streamlit import logger
    from streamlit.testing.v1 import AppTest

    logger.set_log_level("error")
    # "missing ScriptRunContext" from caches cleared and AppTests made outside a script run.
    logger.get_logger("streamlit.runtime.scriptrunner_utils.script_run_context").disabled = True
    st.cache_resource.clear()
    st.cache_data.clear()

    baseline = AppTest.from_string("import streamlit as st\nst.write('hello')")
    cold = timed(baseline.run)
    fresh = AppTest.from_string("import streamlit as st\nst.write('hello')")
    rows = [Row("(AppTest itself: a one-line script)", cold, timed(fresh.run), warm(fresh, ""), "")]

    app = new_app()
    for number, scenario in enumerate(scenarios(query_id)):
        cold = _timed_view(app, scenario, switch=number > 0)
        check(app, scenario.label)
        warm_s = warm(app, scenario.label)
        shown = scenario.describe(app)
        fresh = new_app(scenario.page)
        fresh_s = _timed_view(fresh, scenario, switch=False)
        check(fresh, scenario.label)
        if scenario.page == "duplicates":
            shown += f" (new session: {_dedup_seconds(fresh)})"
        rows.append(Row(scenario.label, cold, fresh_s, warm_s, shown))
    return rows


def _describe_search(app: Any) -> str:
    summary = markdown_with(app, "results")
    count = summary.split(" in ")[0].replace("**", "")
    mode = summary.split("(", 1)[-1].split(";")[0]
    return f"{count} ({mode}), {images_shown(app)} thumbnails"


def _dedup_seconds(app: Any) -> str:
    return "dedup " + markdown_with(app, "groups").rsplit("found in ", 1)[-1]


def _describe_duplicates(app: Any) -> str:
    stats = markdown_with(app, "groups").replace("**", "").split(" among")[0]
    return f"{stats}; first 10 groups, {images_shown(app)} thumbnails; {_dedup_seconds(app)}"


def _describe_clusters(app: Any) -> str:
    caption = next((c.value for c in app.caption if "clusters, method" in c.value), "")
    points = caption.split(",")[0]
    return f"map of {points}, {caption.split(',')[1].strip()}"


def _describe_cluster(app: Any) -> str:
    shown = markdown_with(app, "most typical first").replace("**", "").split(",")[0]
    return f"{shown}, {images_shown(app)} thumbnails"


def _describe_ingest(app: Any) -> str:
    queue = markdown_with(app, "Queue depth").replace("**", "").split(" (start one")[0]
    job = markdown_with(app, "**Job ").replace("**", "").split(" · ")
    metrics = {m.label: m.value for m in app.metric}
    state = job[1] if len(job) > 1 else "?"
    return f"{queue}; last job {state}, {metrics.get('Ingested')} ingested"


def _describe_collection(app: Any) -> str:
    metrics = {m.label: m.value for m in app.metric}
    return f"{metrics.get('Images')} images, contract, indexes"


# -- profiling ----------------------------------------------------------------------------------


def profiled(app: Any, lines: int = 30) -> str:
    """cProfile of one re-render of ``app`` (the script runs in AppTest's script thread)."""
    from streamlit.runtime.scriptrunner.script_runner import ScriptRunner

    profile = cProfile.Profile()
    original = ScriptRunner._run_script_thread

    def wrapped(self: Any) -> None:
        profile.enable()
        try:
            original(self)
        finally:
            profile.disable()

    ScriptRunner._run_script_thread = wrapped  # type: ignore[method-assign]
    try:
        app.run()
    finally:
        ScriptRunner._run_script_thread = original  # type: ignore[method-assign]
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


# -- main ---------------------------------------------------------------------------------------


def _images_arg(value: str) -> int | Path:
    return int(value) if value.isdigit() else Path(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--images",
        type=_images_arg,
        default=10_000,
        help="how many images to generate (default 10000), or a folder of images to use",
    )
    parser.add_argument(
        "--profile", action="store_true", help="profile every page, not only those over 1 s warm"
    )
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)

    from cli.stack.milvus_lite import EmbeddedMilvus
    from cli.stack.net import free_port
    from cli.stack.redis_server import RedisServer
    from services.ledger import JobLedger
    from services.schema import SchemaContract
    from services.store import MilvusStore

    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ui-render-")))
        if isinstance(args.images, Path):
            paths = image_files(args.images)
            if not paths:
                parser.error(f"no images in {args.images}")
            source = f"the {len(paths):,} images of {args.images}"
        else:
            tick = time.perf_counter()
            paths = generate(root / "photos", args.images)
            print(f"generated {len(paths)} images in {time.perf_counter() - tick:.0f} s")
            planted = len(range(0, args.images, STRIDE))
            source = (
                f"{len(paths):,} generated photo-like 320x240 JPEGs, one planted group per "
                f"{STRIDE} images ({planted:,} groups of 2-4: a base with resized, recompressed "
                "and mirrored copies)"
            )
        home = root / "home"
        server = stack.enter_context(EmbeddedMilvus(root / "milvus", free_port()))
        redis_url = f"redis://127.0.0.1:{free_port()}/0"
        redis = RedisServer(redis_url, root / "redis")
        redis.start()
        stack.callback(redis.stop)
        store = MilvusStore.connect(
            server.uri, COLLECTION, SchemaContract.current(MODEL, DIM), timeout=600
        )
        indexed = index(store, JobLedger.from_url(redis_url), paths, home, max_pixels=100_000_000)
        keep_dedup(store, redis_url)
        store.close()
        print(
            f"indexed {indexed.rows} rows: hashing {indexed.analyze_s:.0f} s, "
            f"Milvus upserts {indexed.insert_s:.0f} s, clustering {indexed.cluster_s:.0f} s"
        )
        query = _query_id(indexed.ids_by_name)
        env = {
            "LOOKALIKE_MILVUS_URI": server.uri,
            "LOOKALIKE_REDIS_URL": redis_url,
            "LOOKALIKE_COLLECTION": COLLECTION,
            "LOOKALIKE_HOME": str(home),
            "LOOKALIKE_CLIP_MODEL": "none",
        }
        with environment(env):
            rows = measure(query)
            slow = [row for row in rows if row.warm_median > TARGET_S]
            profiles = {
                row.page: _profile_page(row.page, query)
                for row in rows[1:]
                if args.profile or row in slow
            }
    body = _body(source, indexed, _table(rows), rows)
    print(body)
    for page, text in profiles.items():
        print(f"\n== profile of a warm re-render of {page} ==\n{text}")
    if not args.no_write:
        _report.write_section(
            "ui_render",
            "UI page render times",
            body,
            packages=["streamlit", "pymilvus", "milvus-lite"],
        )
    return 0


def _query_id(ids_by_name: dict[str, str]) -> str:
    """The base of the third planted group (resized, recompressed and mirrored copies), else of
    the first, else any image."""
    for name in (f"{2 * STRIDE:06d}.jpg", f"{0:06d}.jpg"):
        if name in ids_by_name:
            return ids_by_name[name]
    return next(iter(ids_by_name.values()))


def _profile_page(label: str, query_id: str) -> str:
    scenario = next(s for s in scenarios(query_id) if s.label == label)
    app = new_app(scenario.page)
    _timed_view(app, scenario, switch=False)
    return profiled(app)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(rows: Sequence[Row]) -> str:
    header = [
        "page",
        "first render (cold) s",
        "new session s",
        f"warm re-render s, median of {WARM_RUNS} (min-max)",
        "shown",
    ]
    body = [
        [
            row.page,
            _seconds(row.cold_s),
            _seconds(row.fresh_s),
            f"**{row.warm_median:.2f}** ({min(row.warm_s):.2f}-{max(row.warm_s):.2f})",
            row.shown,
        ]
        for row in rows
    ]
    return markdown_table(header, body)


def _body(source: str, indexed: Indexed, table: str, rows: Sequence[Row]) -> str:
    slow_warm = [r.page for r in rows if r.warm_median > TARGET_S]
    slow_cold = [r.page for r in rows if r.cold_s > TARGET_S]
    verdict = (
        f"Over {TARGET_S:.0f} s warm: {', '.join(slow_warm) or 'none'}; over {TARGET_S:.0f} s "
        f"on first render: {', '.join(slow_cold) or 'none'}."
    )
    return (
        f"{indexed.rows:,} images: {source}. Setup, not timed: hashing {indexed.analyze_s:.0f} s, "
        f"Milvus upserts {indexed.insert_s:.0f} s, clustering {indexed.cluster_s:.0f} s."
        f"\n\n{table}\n\n{verdict}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
