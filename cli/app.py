"""The ``lookalike`` command line, assembled in this one place from one module per command group.

Settings are read once, here, in the callback, and passed to every command through the context.
"""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from cli import clusters, dedup, jobs, migrate, milvus, search, serve, watch
from cli.common import console, handle_errors
from services import __version__
from services.settings import Settings

app = typer.Typer(
    name="lookalike",
    help="Image similarity search and deduplication: metadata, perceptual hashes and CLIP "
    "embeddings in Milvus.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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


def version() -> None:
    """Print lookalike's version."""
    console.print(__version__)


# The order here is the order of `lookalike --help`.
for name, command in (
    ("demo", serve.demo),
    ("up", serve.up),
    ("ui", serve.ui_command),
    ("ingest", jobs.ingest),
    ("status", jobs.status),
    ("worker", jobs.worker),
    ("add", search.add),
    ("search", search.search_command),
    ("info", search.info),
    ("migrate", migrate.migrate_command),
    ("dedup", dedup.dedup),
    ("decide", dedup.decide),
    ("undo", dedup.undo),
    ("eval", dedup.eval_command),
    ("clusters", clusters.clusters),
    ("sync", watch.sync),
    ("watch", watch.watch),
    ("version", version),
):
    app.command(name)(command)
app.add_typer(milvus.app, name="milvus")
