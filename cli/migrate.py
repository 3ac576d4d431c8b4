"""``lookalike migrate``: upgrade a collection to the current schema version in place."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cli.common import console, err_console, fail, handle_errors, settings_of
from cli.stack.milvus_lite import milvus_uri
from services.errors import LedgerUnavailableError
from services.ledger import JobLedger
from services.migration import MigrationReport, Plan, SignalReader, Stage, inspect, migrate
from services.queue import QUEUE, live_workers
from services.schema import SCHEMA_VERSION
from services.settings import Settings
from services.sources import Sources
from services.store import MilvusStore, milvus_client

_SHOW_UNREADABLE = 20
_INDEX_REASON = "an earlier release built another; searches fail while it is rebuilt"


def migrate_command(
    ctx: typer.Context,
    collection: Annotated[
        str | None, typer.Option(help="The collection to upgrade (default LOOKALIKE_COLLECTION).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say where the collection stands and what would run.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary.")] = False,
) -> None:
    """Upgrade a collection of schema version 1 or 2 to version 3 in place (a copy; resumable).

    Rows go to COLLECTION__migrating with the fields added since their version (frame_codes in 2,
    patch_codes in 3) computed from each row's image, decoded as on ingest.

    COLLECTION is then re-created under the same instance id and the rows are copied back.

    A row whose image cannot be read keeps those fields empty and is listed: no row is lost.

    Killed at any point, run it again: it resumes where it stopped.

    Nothing may write meanwhile: stop the workers, `lookalike up`, `watch` and the UI first.

    It refuses to start while workers answer or batches are queued.

    A collection already at version 3 whose vector index an earlier release built (CLIP on FLAT
    on Milvus Lite) gets the current index instead, in place (searches fail meanwhile).
    """
    settings = settings_of(ctx)
    name = collection or settings.collection
    with handle_errors(), milvus_uri(settings) as uri:
        client = milvus_client(uri, token=settings.milvus_secret)
        try:
            plan = inspect(client, uri, name)
            if plan.stage is Stage.CURRENT:
                rebuilt = _rebuild_stale_indexes(settings, uri, plan, dry_run=dry_run)
                _print_plan(plan, as_json=as_json, dry_run=dry_run, indexes=rebuilt)
                return
            if dry_run:
                _print_plan(plan, as_json=as_json, dry_run=dry_run)
                return
            _refuse_while_busy(settings)
            reader = SignalReader(
                Sources(max_bytes=settings.max_source_bytes),
                settings.max_image_pixels,
                clip=plan.contract.clip_dim is not None,
            )
            report = _run(client, uri, plan, reader, quiet=as_json)
        finally:
            client.close()
    _print_report(report, as_json=as_json)


def _rebuild_stale_indexes(settings: Settings, uri: str, plan: Plan, *, dry_run: bool) -> list[str]:
    """The vector fields of a current collection whose index an earlier release built (CLIP on
    FLAT on Milvus Lite); rebuilt with the current one unless ``dry_run``."""
    store = MilvusStore.connect(
        uri, plan.collection, plan.contract, token=settings.milvus_secret, create=False
    )
    try:
        stale = store.stale_indexes()
        if stale and not dry_run:
            _refuse_while_busy(settings)
            store.rebuild_indexes(stale)
    finally:
        store.close()
    return stale


def _refuse_while_busy(settings: Settings) -> None:
    """Fail while workers answer or batches wait: they would write during the copy."""
    ledger = JobLedger.from_url(settings.redis_url)
    try:
        depth = ledger.queue_depth(QUEUE)
    except LedgerUnavailableError:
        err_console.print(
            f"[yellow]warning:[/] Redis at {settings.redis_url} does not answer, so no worker "
            "can take batches from it; make sure no other process writes to the collection"
        )
        return
    workers = live_workers(settings)
    if workers or depth:
        fail(
            f"{len(workers)} worker(s) live ({', '.join(workers) or 'none'}) and {depth} "
            f"batch(es) queued: workers must not write during a migration. Let the queue drain "
            "(`lookalike status`), stop every worker (and `lookalike up`, `watch`), then run "
            "`lookalike migrate` again"
        )


def _run(
    client: Any, uri: str, plan: Plan, reader: SignalReader, *, quiet: bool
) -> MigrationReport:
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
    )
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=console, disable=quiet, transient=False) as bar:

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=max(total, 1))
            bar.update(tasks[phase], completed=done if total else 1)

        return migrate(client, uri, plan, reader, progress=progress)


def _print_plan(plan: Plan, *, as_json: bool, dry_run: bool, indexes: Sequence[str] = ()) -> None:
    """``indexes``: the fields whose index was (or, with ``dry_run``, would be) rebuilt."""
    current = plan.stage is Stage.CURRENT
    reindex = [f"rebuild the index of {name!r} ({_INDEX_REASON})" for name in indexes]
    if as_json:
        payload = {
            "collection": plan.collection,
            "schema_version": plan.stored_version,
            "stage": plan.stage.value,
            "dry_run": dry_run,
            "rows": plan.rows,
            "steps": [*plan.steps, *reindex],
            "indexes_rebuilt": [] if dry_run else list(indexes),
        }
        console.print_json(json.dumps(payload))
        return
    if current:
        console.print(
            f"collection {plan.collection!r} is already at schema version {SCHEMA_VERSION} "
            f"({plan.rows} rows): nothing to migrate"
        )
        for step in reindex:
            console.print(f"  - would {step}" if dry_run else f"  - {step}: done")
        return
    console.print(
        f"collection {plan.collection!r} ({plan.rows} rows) is at stage {plan.stage.value} of "
        f"a migration to schema version {SCHEMA_VERSION}; `lookalike migrate` would:"
    )
    for step in plan.steps:
        console.print(f"  - {step}")


def _print_report(report: MigrationReport, *, as_json: bool) -> None:
    plan = report.plan
    if as_json:
        payload = {
            "collection": plan.collection,
            "from_version": plan.from_version,
            "schema_version": SCHEMA_VERSION,
            "stage": plan.stage.value,
            "dry_run": False,
            "rows": report.rows,
            "migrated": report.migrated,
            "unreadable": [{"path": u.path, "error": u.error} for u in report.unreadable],
            "seconds": round(report.seconds, 3),
        }
        console.print_json(json.dumps(payload))
        return
    console.print(
        f"collection {plan.collection!r} is at schema version {SCHEMA_VERSION}: "
        f"{report.rows} rows, {report.migrated} with {' and '.join(plan.computed)}, "
        f"{len(report.unreadable)} unreadable (kept, matched by their whole frame), "
        f"{report.seconds:.1f} s"
    )
    for item in report.unreadable[:_SHOW_UNREADABLE]:
        console.print(f"  [yellow]unreadable[/] {item.path}: {item.error}")
    if len(report.unreadable) > _SHOW_UNREADABLE:
        console.print(f"  … and {len(report.unreadable) - _SHOW_UNREADABLE} more (--json)")
