"""The ``lookalike`` command line: a thin adapter over the core. Settings are read once, here."""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from services import __version__
from services.app import Lookalike, connect
from services.embedded import EmbeddedMilvus, milvus_uri
from services.errors import ConfigError, LookalikeError
from services.filters import Condition, parse_where
from services.search import DEFAULT_MAX_HAMMING, SearchQuery, SearchResult, search
from services.settings import Settings

app = typer.Typer(
    name="lookalike",
    help="Image similarity search and deduplication: metadata, perceptual hashes and CLIP "
    "embeddings in Milvus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


@contextmanager
def _errors() -> Iterator[None]:
    """Our errors become one red line and an exit code; anything else is a bug and a traceback."""
    try:
        yield
    except ConfigError as exc:
        _fail(str(exc), code=2)
    except LookalikeError as exc:
        _fail(str(exc))


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
    assert isinstance(settings, Settings)
    return settings


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Read the LOOKALIKE_* settings once for every command."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with _errors():
        ctx.obj = Settings.from_env()


@app.command()
def version() -> None:
    """Print lookalike's version."""
    console.print(__version__)


@app.command()
def milvus(ctx: typer.Context) -> None:
    """Run the embedded Milvus Lite server (127.0.0.1, data under LOOKALIKE_HOME) until Ctrl-C."""
    settings = _settings(ctx)
    if settings.milvus_uri is not None:
        _fail(f"LOOKALIKE_MILVUS_URI is set ({settings.milvus_uri}): nothing to start")
    with _errors(), EmbeddedMilvus(settings.home, settings.milvus_port) as server:
        console.print(
            f"Milvus Lite serving {server.db_file} at [bold]{server.uri}[/] (Ctrl-C stops)"
        )
        _serve_until_interrupted(server)


def _serve_until_interrupted(server: EmbeddedMilvus) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        code = server.wait()
    except KeyboardInterrupt:
        console.print("stopping Milvus Lite")
        return
    if code != 0:
        _fail(f"the Milvus Lite server exited with code {code}")


@app.command()
def add(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    recursive: Annotated[bool, typer.Option(help="Descend into subfolders.")] = True,
    source: Annotated[str, typer.Option(help="Source label stored with each image.")] = "",
    tag: Annotated[list[str] | None, typer.Option(help="User tag (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Index images synchronously in this process (no queue): decode, hash, embed, upsert."""
    from services.discovery import discover
    from services.pipeline import Failure, index_batch

    settings = _settings(ctx)
    with _errors(), milvus_uri(settings) as uri:
        found = list(discover(paths, recursive=recursive))
        files = [f.path for f in found if f.problem is None]
        failures = [Failure(str(f.path), f.problem) for f in found if f.problem is not None]
        lookalike = connect(settings, uri)
        stored = 0
        with console.status(f"indexing {len(files)} files") if not as_json else _nothing():
            for start in range(0, len(files), settings.clip_batch_size):
                batch = files[start : start + settings.clip_batch_size]
                outcome = index_batch(
                    lookalike.store,
                    lookalike.embedder,
                    batch,
                    max_pixels=settings.max_image_pixels,
                    source=source,
                    tags=tag or [],
                )
                stored += len(outcome.records)
                failures.extend(outcome.failures)
        summary = {
            "files": len(found),
            "stored": stored,
            "failed": [{"path": f.path, "error": f.error} for f in failures],
            "rows": lookalike.store.count(),
        }
        lookalike.close()
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(
        f"{summary['files']} files: {stored} stored, {len(failures)} failed; "
        f"{summary['rows']} rows in {settings.collection!r}"
    )
    for failure in failures:
        console.print(f"  [red]failed[/] {failure.path}: {failure.error}")


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@app.command(name="search")
def search_command(
    ctx: typer.Context,
    image: Annotated[Path | None, typer.Option(help="Find images like this file.")] = None,
    text: Annotated[str | None, typer.Option(help="Find images matching this text (CLIP).")] = None,
    id_: Annotated[str | None, typer.Option("--id", help="Find neighbours of a stored id.")] = None,
    where: Annotated[
        list[str] | None,
        typer.Option(
            help="Metadata filter FIELD OP VALUE, e.g. 'tag=cat', 'width>=800' "
            "(repeatable; all must hold)."
        ),
    ] = None,
    max_hamming: Annotated[
        int, typer.Option(help="pHash pre-filter radius (inclusive), over flips and rotations.")
    ] = DEFAULT_MAX_HAMMING,
    clip_only: Annotated[
        bool, typer.Option("--clip-only", help="Skip the Hamming stage: nearest by CLIP alone.")
    ] = False,
    top_k: Annotated[int, typer.Option(help="How many results.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as a JSON list.")] = False,
) -> None:
    """Hybrid search: metadata filter, Hamming pre-filter on pHash, cosine rerank on CLIP."""
    from services.pipeline import load_for_signals

    settings = _settings(ctx)
    with _errors():
        # Filters are checked before anything is started or loaded.
        conditions: list[Condition] = [c for clause in where or [] for c in parse_where(clause)]
        with milvus_uri(settings) as uri:
            lookalike = connect(settings, uri)
            try:
                query_image = None
                if image is not None:
                    query_image = load_for_signals(
                        image, max_pixels=settings.max_image_pixels, embedder=lookalike.embedder
                    ).image
                query = SearchQuery(
                    image=query_image,
                    text=text,
                    id=id_,
                    where=tuple(conditions),
                    max_hamming=None if clip_only else max_hamming,
                    top_k=top_k,
                )
                result = search(lookalike.store, lookalike.embedder, query)
            finally:
                lookalike.close()
    if as_json:
        print(json.dumps([hit.to_dict() for hit in result.hits], indent=2))  # noqa: T201
        return
    _print_hits(result)


def _print_hits(result: SearchResult) -> None:
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


@app.command()
def info(ctx: typer.Context) -> None:
    """Show the collection: rows, schema contract, indexes, model."""
    settings = _settings(ctx)
    with _errors(), milvus_uri(settings) as uri:
        lookalike = connect(settings, uri)
        _print_info(lookalike)
        lookalike.close()


def _print_info(lookalike: Lookalike) -> None:
    store = lookalike.store
    table = Table(show_header=False)
    table.add_row("Milvus", f"{store.uri} ({store.profile.name})")
    table.add_row("collection", store.collection)
    table.add_row("rows", str(store.count()))
    contract = store.contract
    table.add_row("schema version", str(contract.schema_version))
    table.add_row("CLIP model", contract.clip_model or "none (hash-only)")
    table.add_row("CLIP dim / metric", f"{contract.clip_dim} / {contract.clip_metric}")
    table.add_row("pHash", f"{contract.phash_bits} bits, {contract.phash_bit_order}, HAMMING")
    table.add_row("indexes", f"clip {store.profile.clip_index}, phash {store.profile.phash_index}")
    console.print(table)


@app.command()
def demo(
    ctx: typer.Context,
    serve: Annotated[
        bool, typer.Option(help="Keep the embedded Milvus running afterwards (Ctrl-C stops).")
    ] = True,
) -> None:
    """Build the demo collection, index it, show a search, and keep serving."""
    from services.demo import DEMO_COLLECTION, DEMO_QUERY, index_demo
    from services.embed import create_embedder
    from services.errors import ModelError

    settings = _settings(ctx)
    with _errors():
        try:
            embedder = create_embedder(settings)
        except ModelError as exc:
            err_console.print(f"[yellow]CLIP unavailable, the demo runs hash-only:[/] {exc}")
            embedder = None
        server = (
            None if settings.milvus_uri else EmbeddedMilvus(settings.home, settings.milvus_port)
        )
        if server is not None:
            server.start()
        try:
            uri = server.uri if server else settings.effective_milvus_uri
            with console.status("building and indexing the demo collection"):
                summary = index_demo(settings, uri, embedder)
            console.print(
                f"demo: {summary.files} files, {summary.rows} distinct images, "
                f"{len(summary.failures)} failed, in collection {DEMO_COLLECTION!r} at {uri}"
            )
            console.print(f"search for {DEMO_QUERY} (mirrored copy of the original):")
            _print_hits(summary.example)
            if server is not None and serve:
                example = (
                    "--text 'a cat'"
                    if embedder
                    else f"--image {settings.home / 'demo' / DEMO_QUERY} --max-hamming 12"
                )
                model = "" if embedder else "LOOKALIKE_CLIP_MODEL=none "
                console.print(
                    f"Milvus Lite serving at [bold]{uri}[/]; in another terminal try\n"
                    f"  {model}LOOKALIKE_COLLECTION={DEMO_COLLECTION} lookalike search {example}\n"
                    "Ctrl-C stops."
                )
                _serve_until_interrupted(server)
        finally:
            if server is not None:
                server.stop()


@app.command()
def up(ctx: typer.Context) -> None:
    """Start the embedded stack on this machine: Milvus Lite, Redis, workers (Ctrl-C stops all)."""
    from ingest.stack import Stack

    settings = _settings(ctx)
    # SIGTERM unwinds like Ctrl-C, so the stack stops its children in order.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with _errors():
        try:
            with console.status("starting Milvus, Redis and the workers"):
                stack = Stack(settings)
                stack.start()
        except KeyboardInterrupt:
            console.print("interrupted while starting; stopped what was started")
            return
        try:
            table = Table(title="lookalike stack (Ctrl-C stops all)")
            for column in ("service", "origin", "address"):
                table.add_column(column, overflow="fold")
            for line in stack.describe():
                table.add_row(*line)
            console.print(table)
            exited = stack.wait()
        except KeyboardInterrupt:
            console.print("stopping the stack")
            return
        finally:
            stack.stop()
        if exited is not None:
            _fail(f"{exited.name} exited unexpectedly with code {exited.code}; stopped the stack")
