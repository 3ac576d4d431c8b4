"""``lookalike watch`` and ``lookalike sync``: the collection follows the disk.

``watch`` enqueues new and changed files as jobs once they have settled (never half-written),
and takes deleted or moved-away files out of their rows. ``sync`` reconciles once: paths gone
from disk leave their rows, moved files join their row again, new files are indexed.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import time
from pathlib import Path
from typing import Annotated

import typer

from cli.common import (
    RecursiveOption,
    SourceOption,
    TagOption,
    console,
    fail,
    handle_errors,
    index_in_process,
    settings_of,
    stop_on_signals,
)
from cli.stack.milvus_lite import milvus_uri
from services.app import connect
from services.discovery import IMAGE_SUFFIXES, RAW_SUFFIXES, discover, looks_like_image
from services.errors import LookalikeError
from services.ledger import JobLedger, files_cache_name
from services.producer import IngestRequest, Producer
from services.queue import celery_app
from services.settings import Settings
from services.settling import SettlingFiles
from services.store import VectorStore
from services.sync import apply_sync, plan_sync, remove_paths

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.25


def sync(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders (or files) to reconcile.")],
    recursive: RecursiveOption = True,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; change nothing.")] = False,
    ingest_new: Annotated[
        bool, typer.Option(help="Index files whose content is not stored yet.")
    ] = True,
    source: Annotated[str, typer.Option(help="Source label for new files.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="User tag for new files.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Reconcile the collection with the files under PATHs: paths that no longer exist leave
    their rows (rows left with none are deleted), moved files keep their row (same sha256), new
    files are indexed in this process."""
    settings = settings_of(ctx)
    with handle_errors(), milvus_uri(settings) as uri:
        lookalike = connect(settings, uri)
        try:
            plan = plan_sync(lookalike.store, paths, recursive=recursive)
            summary = plan.summary()
            if not dry_run:
                apply_sync(lookalike.store, plan)
                _forget_cached(settings, lookalike.store, plan.removed_paths)
                if ingest_new and plan.new_files:
                    indexed = index_in_process(
                        settings, lookalike, plan.new_files, source=source, tags=tag or []
                    )
                    summary["indexed"] = indexed.stored
                    summary["failed"] = {f.path: f.error for f in indexed.failures}
        finally:
            lookalike.close()
    summary["dry_run"] = dry_run
    if as_json:
        console.print_json(json.dumps(summary))
        return
    verb = "would remove" if dry_run else "removed"
    console.print(
        f"{verb} {len(plan.removed_paths)} vanished path(s) and {len(plan.emptied)} row(s) left "
        f"with none; {len(plan.moved_paths)} moved file(s) keep their row; "
        f"{len(plan.new_files)} new file(s)" + ("" if dry_run or not ingest_new else " indexed")
    )
    for path, reason in plan.unreadable.items():
        console.print(f"  [red]unreadable[/] {path}: {reason}")


def _forget_cached(settings: Settings, store: VectorStore, paths: list[str]) -> None:
    """Removed paths leave the files cache too, so a file put back later is not skipped."""
    if not paths:
        return
    try:
        JobLedger.from_url(settings.redis_url).forget_files(
            files_cache_name(store.collection, store.instance), paths
        )
    except LookalikeError as exc:
        log.warning("could not clear the files cache (%s); a put-back file is re-hashed", exc)


def watch(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Folders to watch.")],
    recursive: Annotated[bool, typer.Option(help="Watch subfolders too.")] = True,
    source: SourceOption = "",
    tag: TagOption = None,
) -> None:
    """Watch folders until Ctrl-C: enqueue new and changed images for the workers once they
    have not changed for LOOKALIKE_WATCH_QUIET_SECONDS, and take deleted or moved-away files
    out of their rows. Run `lookalike sync` first to catch up with what changed meanwhile."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    settings = settings_of(ctx)
    stop_on_signals()
    events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            kind = event.event_type
            source_path = os.fsdecode(event.src_path)
            if kind in {"created", "modified", "closed"}:
                events.put(("changed", source_path))
            elif kind == "deleted":
                events.put(("gone", source_path))
            elif kind == "moved":
                events.put(("gone", source_path))
                events.put(("changed", os.fsdecode(event.dest_path)))

    folders = [p.resolve() for p in paths]
    for folder in folders:
        if not folder.is_dir():
            fail(f"cannot watch {folder}: not a folder")
    with handle_errors(), milvus_uri(settings) as uri:
        lookalike = connect(settings, uri, load_model=False)
        ledger = JobLedger.from_url(settings.redis_url)
        producer = Producer(settings, ledger, celery_app(settings), uri)
        observer = Observer()
        for folder in folders:
            observer.schedule(Handler(), str(folder), recursive=recursive)
        observer.start()
        console.print(
            f"watching {', '.join(map(str, folders))} for {settings.collection!r} (Ctrl-C stops)"
        )
        try:
            _watch_loop(settings, events, producer, lookalike.store, source, tag or [])
        except KeyboardInterrupt:
            console.print("stopped watching")
        finally:
            observer.stop()
            observer.join(5)
            lookalike.close()


def _watch_loop(
    settings: Settings,
    events: queue.SimpleQueue[tuple[str, str]],
    producer: Producer,
    store: VectorStore,
    source: str,
    tags: list[str],
) -> None:
    settling = SettlingFiles(settings.watch_quiet_seconds)
    ready: list[str] = []
    gone: set[str] = set()
    while True:
        deadline = time.monotonic() + _POLL_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, path = events.get(timeout=left)
            except queue.Empty:
                break
            if kind == "gone":
                gone.add(path)
            else:
                for file in _images_at(path):
                    gone.discard(file)
                    settling.changed(file)
        ready += settling.settled()
        try:
            if ready:
                request = IngestRequest(
                    roots=tuple(ready),
                    recursive=False,
                    source=source,
                    tags=tuple(tags),
                    collection=settings.collection,
                )
                job = producer.start(request)
                console.print(f"enqueued {len(ready)} file(s) as job {job}")
                ready = []
            if gone:
                plan = remove_paths(store, gone)
                if plan.changes:
                    console.print(f"removed {plan.changes} deleted path(s) from the collection")
                gone = set()
        except LookalikeError as exc:
            # Redis or Milvus away for a moment: keep what is pending, try again next round.
            console.print(f"[yellow]retrying later:[/] {exc}")
            time.sleep(2.0)


def _images_at(path: str) -> list[str]:
    """The image files an event's path stands for: itself, or what a folder moved in holds."""
    candidate = Path(path)
    if candidate.name.startswith("."):
        return []
    if candidate.is_dir():
        return [str(f.path) for f in discover([candidate]) if f.problem is None]
    suffix = candidate.suffix.lower()
    if suffix in IMAGE_SUFFIXES or suffix in RAW_SUFFIXES or looks_like_image(candidate):
        return [os.path.abspath(candidate)]  # noqa: PTH100 - as discover names paths
    return []
