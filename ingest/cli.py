"""The commands of ``lookalike`` beyond the core: ingest, status, worker, up, demo, ui, dedup…

They extend the core command line (``services.cli``) here, in the adapter package, so that the
core never imports ``ingest``; ``lookalike`` is this module's ``app``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ingest.celery_app import create_app, worker_argv
from ingest.stack import Stack
from services.cli import app, console, fail, handle_errors, print_hits, settings_of
from services.ledger import JobLedger, JobProgress
from services.producer import IngestRequest, Producer
from services.queue import QUEUE, celery_app, live_workers
from services.settings import Settings
from services.store import MilvusStore

if TYPE_CHECKING:
    from services.dedup import DedupReport

__all__ = ["app"]

_POLL_SECONDS = 0.5
_SHOW_UNACCOUNTED = 20


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Image files or folders to ingest.")
    ] = None,
    recursive: Annotated[bool, typer.Option(help="Descend into subfolders.")] = True,
    source: Annotated[str, typer.Option(help="Source label stored with each image.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="User tag (repeatable).")] = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary (after the job, with --wait).")
    ] = False,
    resume: Annotated[
        str | None, typer.Option(help="Re-enqueue what job JOB has not stored yet.")
    ] = None,
) -> None:
    """Queue images for the workers as one job: skip what is stored unchanged, enqueue the rest."""
    settings = settings_of(ctx)
    if bool(paths) == bool(resume):
        fail("give PATHs to ingest, or --resume JOB (not both)")
    with handle_errors():
        ledger = JobLedger.from_url(settings.redis_url)
        ledger.ping()
        producer = Producer(settings, ledger, celery_app(settings), settings.effective_milvus_uri)
        if resume:
            producer.resume(resume)
            job_id = resume
        else:
            request = IngestRequest(
                roots=tuple(str(p) for p in paths or []),
                recursive=recursive,
                source=source,
                tags=tuple(tag or []),
                collection=settings.collection,
            )
            job_id = producer.start(request)
        progress = (
            _follow(ledger, job_id, quiet=as_json, stall_seconds=settings.stall_seconds)
            if wait
            else ledger.progress(job_id)
        )
        _report(ledger, progress, waited=wait, as_json=as_json)


def _report(
    ledger: JobLedger,
    progress: JobProgress,
    *,
    waited: bool,
    as_json: bool,
    **extra: object,
) -> None:
    """A job's summary (JSON, with ``extra``, or text); a stalled job names its lost files and
    exits 1."""
    stalled = progress.state == "stalled"
    if as_json:
        payload = progress.summary() | extra
        if stalled:
            payload["unaccounted"] = ledger.unaccounted(progress.job_id)
        console.print_json(json.dumps(payload))
    else:
        _print_summary(progress, waited=waited, ledger=ledger)
    if stalled:
        raise typer.Exit(1)


@app.command()
def status(
    ctx: typer.Context,
    job: Annotated[str | None, typer.Argument(help="A job id; omit for recent jobs.")] = None,
    once: Annotated[bool, typer.Option(help="Print once instead of following the job.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a job's progress live (or recent jobs), with queue depth and live workers."""
    settings = settings_of(ctx)
    with handle_errors():
        ledger = JobLedger.from_url(settings.redis_url)
        depth = ledger.queue_depth(QUEUE)
        workers = live_workers(settings)
        if job is None:
            jobs = [ledger.progress(j, with_failures=False) for j in ledger.recent_jobs()]
            if as_json:
                payload = {
                    "queue_depth": depth,
                    "workers": workers,
                    "jobs": [p.summary() | {"failed": p.failed} for p in jobs],
                }
                console.print_json(json.dumps(payload))
                return
            _print_jobs(jobs, depth, workers)
            return
        progress = ledger.progress(job)
        ledger.check_stalled(progress, QUEUE, quiet_for=settings.stall_seconds)
        progress = ledger.progress(job)
        if not (once or as_json or progress.finished or progress.state == "stalled"):
            progress = _follow(ledger, job, quiet=False, stall_seconds=settings.stall_seconds)
        if not as_json:
            console.print(f"queue depth {depth}, {len(workers)} worker(s) live")
        _report(ledger, progress, waited=True, as_json=as_json, queue_depth=depth, workers=workers)


@app.command()
def worker(
    ctx: typer.Context,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery ingestion worker (LOOKALIKE_WORKER_CONCURRENCY processes; 0: one per core).

    Equivalent to `celery -A ingest.worker worker` with lookalike's defaults.
    """
    settings = settings_of(ctx)
    with handle_errors():
        create_app(settings).worker_main(worker_argv(settings, loglevel=loglevel))


def _follow(ledger: JobLedger, job_id: str, *, quiet: bool, stall_seconds: float) -> JobProgress:
    """Poll the ledger until the job ends, with a progress bar unless ``quiet``."""
    progress = ledger.progress(job_id, with_failures=False)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
    )
    started = time.monotonic()
    first_done = progress.ingested + progress.failed
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:
        task = bar.add_task(f"job {job_id}", total=max(progress.queued, 1), detail="", eta="?")
        while True:
            done = progress.ingested + progress.failed
            elapsed = max(time.monotonic() - started, 1e-6)
            rate = (done - first_done) / elapsed
            remaining = max(progress.queued - done, 0)
            eta = f"{remaining / rate:.0f}s" if rate > 0 else "?"
            detail = (
                f"{progress.near_duplicates} near-dup, {progress.exact_duplicates} exact, "
                f"{progress.failed} failed, {progress.skipped} skipped, {rate:.0f} img/s"
            )
            bar.update(task, total=max(progress.queued, 1), completed=done, detail=detail, eta=eta)
            if progress.finished or ledger.check_stalled(progress, QUEUE, quiet_for=stall_seconds):
                break
            time.sleep(_POLL_SECONDS)
            progress = ledger.progress(job_id, with_failures=False)
    return ledger.progress(job_id)


def _print_summary(progress: JobProgress, *, waited: bool, ledger: JobLedger | None = None) -> None:
    state = progress.state if waited else "queued for the workers"
    console.print(
        f"job [bold]{progress.job_id}[/] ({state}): {progress.queued} queued, "
        f"{progress.ingested} ingested, {progress.skipped} skipped, "
        f"{progress.near_duplicates} near-duplicates, {progress.exact_duplicates} exact "
        f"duplicates, {progress.failed} failed"
    )
    for failure in progress.failures:
        console.print(f"  [red]failed[/] {failure.path}: {failure.error}")
    if progress.state == "stalled" and ledger is not None:
        missing = ledger.unaccounted(progress.job_id)
        console.print(
            f"[red]stalled[/]: nothing is queued or running, and {len(missing)} file(s) are "
            f"neither stored nor failed; re-enqueue them with "
            f"`lookalike ingest --resume {progress.job_id} --wait`"
        )
        for path in missing[:_SHOW_UNACCOUNTED]:
            console.print(f"  [yellow]unaccounted[/] {path}")
        if len(missing) > _SHOW_UNACCOUNTED:
            console.print(f"  … and {len(missing) - _SHOW_UNACCOUNTED} more")
    if not waited:
        console.print(f"follow it with `lookalike status {progress.job_id}`")


def _print_jobs(jobs: list[JobProgress], depth: int, workers: list[str]) -> None:
    console.print(f"queue depth {depth}; workers: {', '.join(workers) or 'none answering'}")
    table = Table("job", "state", "queued", "ingested", "skipped", "near-dup", "failed")
    for job in jobs:
        table.add_row(
            job.job_id,
            job.state,
            str(job.queued),
            str(job.ingested),
            str(job.skipped),
            str(job.near_duplicates),
            str(job.failed),
        )
    console.print(table)


@app.command()
def up(
    ctx: typer.Context,
    ui: Annotated[bool, typer.Option(help="Also run the UI (LOOKALIKE_UI_PORT).")] = True,
) -> None:
    """Start the embedded stack: Milvus Lite, Redis, workers and the UI (Ctrl-C stops all)."""
    settings = settings_of(ctx)
    with handle_errors(), _running_stack(settings, ui=ui) as stack:
        _print_stack(stack)
        _serve(stack)


@app.command(name="ui")
def ui_command(ctx: typer.Context) -> None:
    """Run the Streamlit UI alone, until Ctrl-C.

    Pages: Search, Duplicates, Clusters, Ingest, Collection. Milvus and Redis must be running
    (`lookalike up` runs everything, the UI included).
    """
    from ingest.stack import child_env, run_foreground
    from ui.launch import process_spec, url

    settings = settings_of(ctx)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so Streamlit is stopped, never left orphaned.
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda *_: sys.exit(0))
    console.print(f"lookalike UI at {url(settings)} (collection {settings.collection!r})")
    raise typer.Exit(run_foreground(process_spec(settings), child_env(settings, os.environ)))


@app.command()
def demo(
    ctx: typer.Context,
    serve: Annotated[
        bool, typer.Option(help="Keep the stack running afterwards (Ctrl-C stops).")
    ] = True,
) -> None:
    """Start the stack, ingest a demo collection through the queue, show a search, keep serving.

    The demo collection is scikit-image's sample photos and transformed copies of them,
    rebuilt under LOOKALIKE_HOME/demo and ingested into the collection 'demo'.
    """
    from services.demo import DEMO_COLLECTION, DEMO_QUERY, build_demo_collection, example_search
    from services.embed import create_embedder
    from services.errors import ModelError
    from services.store import drop_collection
    from ui.launch import url as ui_url

    settings = settings_of(ctx)
    with handle_errors():
        try:
            embedder = create_embedder(settings)
        except ModelError as exc:
            console.print(f"[yellow]CLIP unavailable, the demo runs hash-only:[/] {exc}")
            settings = settings.model_copy(update={"clip_model": "none"})
            embedder = None
        root = settings.home / "demo"
        build_demo_collection(root)
        ui_env = {"LOOKALIKE_COLLECTION": DEMO_COLLECTION}
        with _running_stack(settings, ui=serve, ui_env=ui_env) as stack:
            _print_stack(stack)
            # Rebuilt each time: the model may differ from the last run's.
            drop_collection(stack.milvus_uri, DEMO_COLLECTION, token=settings.milvus_secret)
            ledger = JobLedger.from_url(stack.redis_url)
            producer = Producer(settings, ledger, celery_app(settings), stack.milvus_uri)
            request = IngestRequest(roots=(str(root),), source="demo", collection=DEMO_COLLECTION)
            job_id = producer.start(request)
            progress = _follow(ledger, job_id, quiet=False, stall_seconds=settings.stall_seconds)
            _report(ledger, progress, waited=True, as_json=False)
            console.print(f"search for {DEMO_QUERY} (a mirrored copy of the original):")
            print_hits(example_search(settings, stack.milvus_uri, embedder))
            if embedder is not None:
                _demo_clusters(settings, stack.milvus_uri, DEMO_COLLECTION)
            if serve:
                console.print(f"UI: {ui_url(settings)} (collection {DEMO_COLLECTION!r})")
                model = "" if embedder else "LOOKALIKE_CLIP_MODEL=none "
                example = "--text 'a cat'" if embedder else f"--image {root / DEMO_QUERY}"
                console.print(
                    f"In another terminal: {model}LOOKALIKE_COLLECTION={DEMO_COLLECTION} "
                    f"lookalike search {example}"
                )
                _serve(stack)


def _demo_clusters(settings: Settings, uri: str, collection: str) -> None:
    """Cluster the demo collection so that the UI's Clusters page has a map to show."""
    from services import cluster_map
    from services.clusters import cluster_collection
    from services.store import stored_contract

    contract = stored_contract(uri, collection, token=settings.milvus_secret)
    if contract is None or contract.clip_dim is None:
        return
    store = MilvusStore.connect(uri, collection, contract, token=settings.milvus_secret)
    try:
        report = cluster_collection(store, k=None, projection="pca")
    finally:
        store.close()
    cluster_map.save(report, cluster_map.map_file(settings.home, collection))
    console.print(f"clustered the demo collection: {len(report.clusters)} clusters")


@contextmanager
def _running_stack(
    settings: Settings, *, ui: bool = False, ui_env: dict[str, str] | None = None
) -> Iterator[Stack]:
    """The embedded stack, started (with a spinner) and always stopped in order."""
    from ui.launch import process_spec

    # SIGTERM unwinds like Ctrl-C, so the stack stops its children in order.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    stack = Stack(settings, extra_processes=[process_spec(settings, ui_env)] if ui else ())
    try:
        with console.status("starting Milvus, Redis, the workers" + (" and the UI" if ui else "")):
            stack.start()
        yield stack
    except KeyboardInterrupt:
        console.print("interrupted; stopping the stack")
    finally:
        stack.stop()


def _print_stack(stack: Stack) -> None:
    table = Table(title="lookalike stack (Ctrl-C stops all)")
    for column in ("service", "origin", "address"):
        table.add_column(column, overflow="fold")
    for line in stack.describe():
        table.add_row(*line)
    console.print(table)


def _serve(stack: Stack) -> None:
    """Block until Ctrl-C or SIGTERM; a child dying unexpectedly fails the command."""
    exited = stack.wait()
    if exited is not None:
        fail(f"{exited.name} exited unexpectedly with code {exited.code}; stopped the stack")


@app.command()
def dedup(
    ctx: typer.Context,
    where: Annotated[
        list[str] | None, typer.Option(help="Only rows matching FIELD OP VALUE (repeatable).")
    ] = None,
    max_hamming: Annotated[
        int | None,
        typer.Option(
            help="pHash radius (inclusive), over flips and rotations "
            "[default: LOOKALIKE_DEDUP_MAX_HAMMING, 8]."
        ),
    ] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(help="Also pair images with CLIP cosine >= this (collections with CLIP)."),
    ] = None,
    exact_only: Annotated[bool, typer.Option(help="Byte-identical files only.")] = False,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            help="Keeper policy, in order: pixels, bytes, oldest, format:PNG,JPEG, path:REGEX "
            "(repeatable; default pixels, bytes, oldest)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per member.")
    ] = None,
    move_to: Annotated[
        Path | None, typer.Option(help="Move duplicates (never keepers) under this folder.")
    ] = None,
    delete: Annotated[bool, typer.Option(help="Delete duplicates (needs --yes).")] = False,
    yes: Annotated[bool, typer.Option(help="Confirm --delete.")] = False,
) -> None:
    """Find every group of duplicates: exact (same bytes) and near (pHash, CLIP).

    By default no file changes. Groups are anchored on their keeper, so unrelated images are
    never chained together; resolved groups and groups marked not-duplicates do not come back.
    """
    from services.decisions import RedisDecisions
    from services.dedup import DedupOptions, find_duplicates, resolve
    from services.filters import compile_filter, parse_where
    from services.keepers import parse_policy

    settings = settings_of(ctx)
    if delete and not yes:
        fail("--delete removes files: add --yes to confirm")
    if delete and move_to is not None:
        fail("choose --move-to or --delete, not both")
    with handle_errors():
        expr = compile_filter([c for clause in where or [] for c in parse_where(clause)])
        policy = parse_policy(keep or [])
        store = _open_existing(settings)
        decisions = RedisDecisions.from_url(settings.redis_url, settings.collection)
        radius = settings.dedup_max_hamming if max_hamming is None else max_hamming
        options = DedupOptions(radius, min_cosine, exact_only, expr)
        report = find_duplicates(store, policy, options, decisions)
        actions = resolve(
            store, report.groups, move_to=move_to, delete_files=delete, decisions=decisions
        )
    if csv_file is not None:
        _write_csv(csv_file, report)
    if as_json:
        payload = report.to_dict()
        if actions:
            payload["actions"] = [a.__dict__ for a in actions]
        console.print_json(json.dumps(payload))
    else:
        _print_groups(report)
    for action in actions:
        if not action.done:
            console.print(f"[red]not changed[/] {action.path}: {action.error}")
    if any(not a.done for a in actions):
        raise typer.Exit(1)


@app.command()
def decide(
    ctx: typer.Context,
    verdict: Annotated[str, typer.Argument(help="not-duplicates or resolved")],
    keeper: Annotated[str, typer.Argument(help="Id of the group's keeper.")],
    members: Annotated[list[str], typer.Argument(help="Ids of the other members.")],
) -> None:
    """Record a verdict on a duplicate group, so `lookalike dedup` does not show it again."""
    from services.decisions import RedisDecisions

    settings = settings_of(ctx)
    kinds: dict[str, Literal["not_duplicates", "resolved"]] = {
        "not-duplicates": "not_duplicates",
        "resolved": "resolved",
    }
    if verdict not in kinds:
        fail("the verdict is not-duplicates or resolved")
    with handle_errors():
        RedisDecisions.from_url(settings.redis_url, settings.collection).record(
            kinds[verdict],
            keeper,
            members,
        )
    console.print(f"recorded: {verdict} for {1 + len(members)} images")


def _open_existing(settings: Settings) -> MilvusStore:
    from services.errors import StoreError
    from services.store import stored_contract

    uri, token = settings.effective_milvus_uri, settings.milvus_secret
    contract = stored_contract(uri, settings.collection, token=token)
    if contract is None:
        raise StoreError(f"no collection {settings.collection!r} at {uri}; ingest images first")
    return MilvusStore.connect(uri, settings.collection, contract, token=token)


def _write_csv(path: Path, report: DedupReport) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "kind", "role", "path", "id", "hamming", "cosine", "reason"])
        for number, group in enumerate(report.groups, 1):
            for member in group.members:
                role = "keep" if member is group.keeper else "duplicate"
                writer.writerow(
                    [
                        number,
                        group.kind,
                        role,
                        member.path,
                        member.id,
                        "" if member.hamming is None else member.hamming,
                        "" if member.cosine is None else f"{member.cosine:.6f}",
                        member.reason,
                    ]
                )


def _print_groups(report: DedupReport) -> None:
    for number, group in enumerate(report.groups, 1):
        console.print(f"[bold]group {number}[/] ({group.kind}, {len(group.members)} images)")
        console.print(f"  [green]keep[/] {group.keeper.path}  ({group.keeper.reason})")
        for member in group.duplicates:
            console.print(f"  [yellow]dup[/]  {member.path}  ({member.reason})")
    stats = ", ".join(f"{k} {v}" for k, v in report.stats.items())
    console.print(f"{len(report.groups)} groups; {stats}")


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    ground_truth: Annotated[
        Path, typer.Argument(help="CSV with a header path,group (relative paths: from its folder).")
    ],
    where: Annotated[
        list[str] | None, typer.Option(help="Only rows matching FIELD OP VALUE (repeatable).")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Write the precision-recall curve to this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Precision, recall and F1 of duplicate pairs against labelled groups, per threshold.

    Every pair of stored paths that the CSV labels is a question (a positive when both share a
    group); pHash radii 0..16 (over flips and rotations, as `lookalike dedup`) and, where the
    collection stores CLIP, minimum cosines 0.80..0.99. A content stored under several paths
    counts once per path, so exact copies are pairs at distance 0.
    """
    from services.evaluation import (
        best_f1,
        evaluate,
        evaluate_clip,
        items_from_records,
        labelled,
        load_ground_truth,
        pr_curve_png,
    )
    from services.filters import compile_filter, parse_where

    settings = settings_of(ctx)
    with handle_errors():
        truth = load_ground_truth(ground_truth)
        expr = compile_filter([c for clause in where or [] for c in parse_where(clause)])
        store = _open_existing(settings)
        items = items_from_records(store.iterate(expr, with_vectors=store.has_clip))
        found = labelled(items, truth)
        curves = {"pHash": evaluate(found, truth)}
        if store.has_clip:
            curves["CLIP"] = evaluate_clip(found, truth)
        if png is not None:
            pr_curve_png(curves, png)
    missing = len(truth) - len(found)
    if as_json:
        payload = {
            "labelled": len(truth),
            "found": len(found),
            "results": {k: [r.to_dict() for r in v] for k, v in curves.items()},
            "best": {k: best_f1(v).to_dict() for k, v in curves.items()},
        }
        console.print_json(json.dumps(payload))
        return
    console.print(
        f"{len(found)} of {len(truth)} labelled paths are in {settings.collection!r}"
        + (f" ([yellow]{missing} missing, not counted[/])" if missing else "")
    )
    for name, results in curves.items():
        best = best_f1(results)
        table = Table("threshold", "TP", "FP", "FN", "precision", "recall", "F1", title=name)
        for result in results:
            mark = " [bold green]<- best F1[/]" if result is best else ""
            threshold = (
                f"cos >= {result.threshold:.2f}" if name == "CLIP" else f"r <= {result.threshold:g}"
            )
            table.add_row(
                threshold,
                str(result.tp),
                str(result.fp),
                str(result.fn),
                f"{result.precision:.4f}",
                f"{result.recall:.4f}",
                f"{result.f1:.4f}" + mark,
            )
        console.print(table)
    if png is not None:
        console.print(f"PR curve written to {png}")


@app.command()
def clusters(
    ctx: typer.Context,
    k: Annotated[int | None, typer.Option("--k", help="Number of k-means clusters.")] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Pick k in 2..30 by silhouette on a sample.")
    ] = False,
    method: Annotated[
        str, typer.Option(help="kmeans, or density (HDBSCAN; finds k itself, noise is -1).")
    ] = "kmeans",
    where: Annotated[
        list[str] | None, typer.Option(help="Only rows matching FIELD OP VALUE (repeatable).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print clusters and stats as JSON.")
    ] = False,
    points: Annotated[
        bool, typer.Option("--points", help="With --json: every image's 2-D position and score.")
    ] = False,
) -> None:
    """Cluster the CLIP vectors and write each image's cluster id to the `cluster` field.

    Prints each cluster's size and its most representative images; `--where cluster == 3`
    then selects a cluster in other commands.
    """
    from rich.progress import TaskID

    from services.clusters import cluster_collection
    from services.filters import compile_filter, parse_where

    settings = settings_of(ctx)
    methods: dict[str, Literal["kmeans", "density"]] = {"kmeans": "kmeans", "density": "density"}
    if method not in methods:
        fail("--method is kmeans or density")
    if method == "kmeans" and (k is None) == (not auto):
        fail("k-means needs --k K or --auto (one of them)")
    if method == "density" and k is not None:
        fail("--k is for k-means; the density method finds the number of clusters itself")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn())
    with handle_errors(), Progress(*columns, console=console, disable=as_json) as bar:
        expr = compile_filter([c for clause in where or [] for c in parse_where(clause)])
        store = _open_existing(settings)
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0)
            bar.update(tasks[stage], completed=fraction)

        try:
            report = cluster_collection(
                store, k=None if auto else k, method=methods[method], where=expr, progress=advance
            )
        finally:
            store.close()
    from services import cluster_map

    # The UI's Clusters page shows the last run's map.
    cluster_map.save(report, cluster_map.map_file(settings.home, settings.collection))
    if as_json:
        console.print_json(json.dumps(report.to_dict(with_points=points)))
        return
    table = Table("cluster", "images", "mean distance", "representative images")
    for info in report.clusters:
        paths = "\n".join(path for _, path in info.representatives)
        table.add_row(str(info.id), str(info.size), f"{info.mean_distance:.3f}", paths)
    console.print(table)
    console.print(", ".join(f"{name} {value}" for name, value in report.stats.items()))
