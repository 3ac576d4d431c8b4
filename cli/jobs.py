"""``lookalike ingest``, ``status`` and ``worker``: jobs through the queue."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

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

from cli.common import (
    RecursiveOption,
    SourceOption,
    TagOption,
    console,
    fail,
    handle_errors,
    settings_of,
)
from ingest.celery_app import create_app, worker_argv
from services.ledger import JobLedger, JobProgress
from services.producer import IngestRequest, Producer
from services.queue import QUEUE, celery_app, live_workers

_POLL_SECONDS = 0.5
_SHOW_UNACCOUNTED = 20


def ingest(
    ctx: typer.Context,
    paths: Annotated[
        list[str] | None,
        typer.Argument(help="Image files or folders, or s3://BUCKET[/PREFIX], to ingest."),
    ] = None,
    recursive: RecursiveOption = True,
    source: SourceOption = "",
    tag: TagOption = None,
    wait: Annotated[bool, typer.Option(help="Show progress until the job ends.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON summary (after the job, with --wait).")
    ] = False,
    resume: Annotated[
        str | None, typer.Option(help="Re-enqueue what job JOB has not stored yet.")
    ] = None,
    urls_from: Annotated[
        Path | None,
        typer.Option(help="A file of image URLs (https://), one a line; # starts a comment."),
    ] = None,
) -> None:
    """Queue images for the workers as one job: skip what is stored unchanged, enqueue the rest."""
    settings = settings_of(ctx)
    paths = [*(paths or []), *(_read_url_list(urls_from) if urls_from else [])]
    if bool(paths) == bool(resume):
        fail("give PATHs (or --urls-from) to ingest, or --resume JOB (not both)")
    with handle_errors():
        ledger = JobLedger.from_url(settings.redis_url)
        ledger.ping()
        producer = Producer(settings, ledger, celery_app(settings), settings.effective_milvus_uri)
        if resume:
            producer.resume(resume)
            job_id = resume
        else:
            request = IngestRequest(
                roots=tuple(paths or []),
                recursive=recursive,
                source=source,
                tags=tuple(tag or []),
                collection=settings.collection,
            )
            job_id = producer.start(request)
        progress = (
            follow(ledger, job_id, quiet=as_json, stall_seconds=settings.stall_seconds)
            if wait
            else ledger.progress(job_id)
        )
        report(ledger, progress, waited=wait, as_json=as_json)


def _read_url_list(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        fail(f"cannot read --urls-from {path}: {exc.strerror}", code=2)
    urls = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    wrong = [url for url in urls if not url.lower().startswith(("https://", "http://"))]
    if wrong:
        fail(f"--urls-from {path}: not a URL: {wrong[0]!r}", code=2)
    return urls


def report(
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
            progress = follow(ledger, job, quiet=False, stall_seconds=settings.stall_seconds)
        if not as_json:
            console.print(f"queue depth {depth}, {len(workers)} worker(s) live")
        report(ledger, progress, waited=True, as_json=as_json, queue_depth=depth, workers=workers)


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


def follow(ledger: JobLedger, job_id: str, *, quiet: bool, stall_seconds: float) -> JobProgress:
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
