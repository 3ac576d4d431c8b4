"""What every command shares: the consoles, errors as one red line, the settings, output."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

from cli.stack.milvus_lite import milvus_uri
from services.errors import CollectionNotFoundError, ConfigError, LookalikeError
from services.search import SearchResult
from services.settings import Settings
from services.store import MilvusStore, stored_contract

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
        store = MilvusStore.connect(uri, settings.collection, contract, token=token, create=False)
        try:
            yield store
        finally:
            store.close()
