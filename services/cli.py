"""The ``lookalike`` command line, core commands: a thin adapter over the core.

Settings are read once, here, in the callback. The ingestion commands (ingest, status, worker, up,
demo) extend this app in ``ingest.cli``, so that the core never imports the adapters; the
``lookalike`` console command is ``ingest.cli:app``.
"""

from __future__ import annotations

import json
import logging
import os
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
from services.search import SearchQuery, SearchResult, search
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


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    """Read the LOOKALIKE_* settings once for every command."""
    # gRPC's C core logs keepalive chatter with Milvus Lite ("GOAWAY too_many_pings") straight
    # to stderr; our own errors say what failed. GRPC_VERBOSITY set by the user still wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with handle_errors():
        ctx.obj = Settings.from_env()


@app.command()
def version() -> None:
    """Print lookalike's version."""
    console.print(__version__)


milvus_app = typer.Typer(
    help="The embedded Milvus Lite server, and access control on a Milvus server.",
    pretty_exceptions_enable=False,
)
app.add_typer(milvus_app, name="milvus")


@milvus_app.callback(invoke_without_command=True)
def milvus(ctx: typer.Context) -> None:
    """Run the embedded Milvus Lite server (127.0.0.1, data under LOOKALIKE_HOME) until Ctrl-C.

    Milvus Lite has no authentication: it listens on 127.0.0.1 only. For a shared server, see
    `lookalike milvus init-roles`.
    """
    if ctx.invoked_subcommand is not None:
        return
    settings = settings_of(ctx)
    if settings.milvus_uri is not None:
        fail(f"LOOKALIKE_MILVUS_URI is set ({settings.milvus_uri}): nothing to start")
    with handle_errors(), EmbeddedMilvus(settings.home, settings.milvus_port) as server:
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
        fail(f"the Milvus Lite server exited with code {code}")


WRITER_PASSWORD_ENV = "MILVUS_WRITER_PASSWORD"
READER_PASSWORD_ENV = "MILVUS_READER_PASSWORD"


@milvus_app.command("init-roles")
def init_roles(
    ctx: typer.Context,
    writer_user: Annotated[
        str, typer.Option(help="User of the workers and the UI (writer role).")
    ] = "lookalike_writer",
    reader_user: Annotated[
        str, typer.Option(help="Read-only user for apps that query Milvus directly.")
    ] = "lookalike_reader",
    prefix: Annotated[
        str, typer.Option(help="Prefix of the role and privilege group names.")
    ] = "lookalike",
    db_name: Annotated[
        str, typer.Option(help="The database whose collections the roles cover.")
    ] = "default",
) -> None:
    """Create (or check) the writer and read-only roles and their users on a Milvus server.

    Needs LOOKALIKE_MILVUS_URI and an administrator's LOOKALIKE_MILVUS_TOKEN (root:PASSWORD).
    The users' passwords come from MILVUS_WRITER_PASSWORD and MILVUS_READER_PASSWORD, or are
    asked for without echo. Running it again changes nothing that is already right.
    """
    from services import roles

    settings = settings_of(ctx)
    uri, admin = settings.milvus_uri, settings.milvus_secret
    if uri is None:
        fail(
            "set LOOKALIKE_MILVUS_URI to the Milvus server to set up; the embedded Milvus Lite "
            "has no authentication (it listens on 127.0.0.1 only)",
            code=2,
        )
    if admin is None:
        fail("set LOOKALIKE_MILVUS_TOKEN to an administrator's credentials (root:PASSWORD)", code=2)
    if writer_user == reader_user:
        fail("the writer and the reader must be different users", code=2)
    with handle_errors():
        plan = roles.AccessPlan.build(prefix, db_name)
        users = [
            roles.UserSpec(
                writer_user, _password(WRITER_PASSWORD_ENV, writer_user), plan.writer.name
            ),
            roles.UserSpec(
                reader_user, _password(READER_PASSWORD_ENV, reader_user), plan.reader.name
            ),
        ]
        client = roles.connect(uri, admin)
        try:
            steps = roles.init_roles(
                client, plan, users, password_works=roles.password_works(uri), uri=uri
            )
        finally:
            client.close()
        enforced = roles.authentication_enforced(uri)
    table = Table("what", "name", "done", "detail", title=f"access control on {uri}")
    for step in steps:
        table.add_row(step.kind, step.name, step.action, step.detail)
    console.print(table)
    if not enforced:
        console.print(
            "[yellow]warning:[/] this server lets anyone in, so the roles are not enforced: set "
            "common.security.authorizationEnabled: true (see deploy/README.md)"
        )


def _password(variable: str, user: str) -> str:
    """A user's password from ``variable``, else asked for on the terminal (never echoed)."""
    value = os.environ.get(variable, "")
    if value:
        return value
    if not sys.stdin.isatty():
        fail(f"set {variable} to the password of Milvus user {user!r}", code=2)
    return str(
        typer.prompt(
            f"Password for Milvus user {user!r}", hide_input=True, confirmation_prompt=True
        )
    )


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

    settings = settings_of(ctx)
    with handle_errors(), milvus_uri(settings) as uri:
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
        int | None,
        typer.Option(
            help="pHash pre-filter radius (inclusive), over flips and rotations "
            "[default: LOOKALIKE_SEARCH_MAX_HAMMING, 10]."
        ),
    ] = None,
    clip_only: Annotated[
        bool, typer.Option("--clip-only", help="Skip the Hamming stage: nearest by CLIP alone.")
    ] = False,
    top_k: Annotated[int, typer.Option(help="How many results.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as a JSON list.")] = False,
) -> None:
    """Hybrid search: metadata filter, Hamming pre-filter on pHash, cosine rerank on CLIP."""
    from services.pipeline import load_for_signals

    settings = settings_of(ctx)
    with handle_errors():
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
                    max_hamming=None
                    if clip_only
                    else (settings.search_max_hamming if max_hamming is None else max_hamming),
                    top_k=top_k,
                )
                result = search(lookalike.store, lookalike.embedder, query)
            finally:
                lookalike.close()
    if as_json:
        print(json.dumps([hit.to_dict() for hit in result.hits], indent=2))  # noqa: T201
        return
    print_hits(result)


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


@app.command()
def info(ctx: typer.Context) -> None:
    """Show the collection: rows, schema contract, indexes, model."""
    settings = settings_of(ctx)
    with handle_errors(), milvus_uri(settings) as uri:
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
