"""What every command shares: the consoles, errors as one red line, the settings, output."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from cli.stack.milvus_lite import milvus_uri
from services.app import Lookalike, vector_cache_root
from services.arrival_index import CodeAnnouncer, arrival_codes
from services.code_feed import FeedDeletions, RedisCodeFeed
from services.errors import (
    CollectionNotFoundError,
    ConfigError,
    LedgerUnavailableError,
    LookalikeError,
)
from services.ingestion import ContentLocks, MatchPolicy, NewContents, ProcessLocks, ingest_paths
from services.ledger import JobLedger
from services.pipeline import Failure
from services.search import SearchResult
from services.settings import Settings
from services.store import MilvusStore, stored_contract

# Options that several commands share, declared once.
RecursiveOption = Annotated[bool, typer.Option(help="Descend into subfolders.")]
SourceOption = Annotated[str, typer.Option(help="Source label stored with each image.")]
TagOption = Annotated[list[str] | None, typer.Option(help="User tag (repeatable).")]

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def handle_errors() -> Iterator[None]:
    """Our errors become one red line and an exit code; anything else is a bug and a traceback."""
    try:
        yield
    except ConfigError as exc:
        fail(str(exc), code=2)
    except LookalikeError as exc:
        fail(str(exc))


def settings_of(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


def print_hits(result: SearchResult) -> None:
    table = Table(title=f"{len(result.hits)} hits ({result.mode}, {result.elapsed_ms:.1f} ms)")
    for column in ("#", "cosine", "hamming", "path", "size", "id"):
        table.add_column(column, overflow="fold" if column == "path" else "ellipsis")
    for rank, hit in enumerate(result.hits, 1):
        table.add_row(
            str(rank),
            "" if hit.cosine is None else f"{hit.cosine:.4f}",
            "" if hit.hamming is None else str(hit.hamming),
            hit.path,
            f"{hit.record.width}x{hit.record.height}",
            hit.id[:12],
        )
    console.print(table)
    if result.truncated:
        console.print("[yellow]the Hamming stage hit its candidate limit; filter more[/]")


@contextmanager
def existing_collection(settings: Settings) -> Iterator[MilvusStore]:
    """The configured collection as it is stored (never created), at the configured Milvus or
    the embedded server, started for the command when none runs."""
    with milvus_uri(settings) as uri:
        token = settings.milvus_secret
        contract = stored_contract(uri, settings.collection, token=token)
        if contract is None:
            raise CollectionNotFoundError(
                f"no collection {settings.collection!r} at {uri}; ingest images first"
            )
        notices = FeedDeletions.from_url(settings.redis_url)  # rows it deletes reach the workers
        store = MilvusStore.connect(
            uri,
            settings.collection,
            contract,
            token=token,
            create=False,
            notices=notices,
            vector_cache=vector_cache_root(settings),
        )
        try:
            yield store
        finally:
            store.close()


@dataclass(frozen=True)
class Indexed:
    """What indexing files in this process did."""

    stored: int
    near: int
    failures: list[Failure]


def index_in_process(
    settings: Settings,
    lookalike: Lookalike,
    files: Sequence[str],
    *,
    source: str,
    tags: Sequence[str],
) -> Indexed:
    """Store ``files`` through the one use case the workers run, a CLIP batch at a time, holding
    the workers' Redis locks when Redis answers (they may store the same contents) and
    announcing the new contents on the code feed (so that running workers match arrivals
    against them), else a lock of this process alone."""
    ledger = JobLedger.from_url(settings.redis_url)
    store = lookalike.store
    announce: NewContents | None = None
    try:
        ledger.ping()
        locks: ContentLocks = ledger
        feed = RedisCodeFeed.from_url(settings.redis_url, store.collection, store.instance)
        codes = arrival_codes(settings.dup_max_hamming, patches=settings.arrival_patches)
        announce = CodeAnnouncer(feed, codes)
    except LedgerUnavailableError:
        locks = ProcessLocks()
    policy = MatchPolicy(
        settings.dup_max_hamming, settings.dup_min_cosine, patches=settings.arrival_patches
    )
    stored = near = 0
    failures: list[Failure] = []
    for start in range(0, len(files), settings.clip_batch_size):
        outcome = ingest_paths(
            store,
            lookalike.embedder,
            files[start : start + settings.clip_batch_size],
            locks=locks,
            policy=policy,
            max_pixels=settings.max_image_pixels,
            source=source,
            tags=tags,
            announce=announce,
        )
        stored += len(outcome.records)
        near += len(outcome.near)
        failures.extend(outcome.failures)
    return Indexed(stored, near, failures)


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every child is stopped, never left orphaned,
    and a long-running command (up, ui, demo, watch) exits 0."""
    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, lambda *_: sys.exit(0))
