"""``lookalike add``, ``search`` and ``info``: the collection from this process, no queue."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cli.common import (
    RecursiveOption,
    SourceOption,
    TagOption,
    console,
    handle_errors,
    index_in_process,
    print_hits,
    settings_of,
)
from cli.stack.milvus_lite import milvus_uri
from services.app import Lookalike, connect
from services.filters import Condition, parse_where
from services.patches import patch_radius
from services.search import LoadedPatches, SearchQuery, search, validate


def add(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    recursive: RecursiveOption = True,
    source: SourceOption = "",
    tag: TagOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Index images in this process (no queue), exactly as a worker does: decode, hash, embed,
    match against what is stored (its `dup_of`), merge, upsert."""
    from services.discovery import discover
    from services.pipeline import Failure

    settings = settings_of(ctx)
    with handle_errors(), milvus_uri(settings) as uri:
        found = list(discover(paths, recursive=recursive))
        files = [str(f.path) for f in found if f.problem is None]
        failures = [Failure(str(f.path), f.problem) for f in found if f.problem is not None]
        lookalike = connect(settings, uri)
        with console.status(f"indexing {len(files)} files") if not as_json else nullcontext():
            indexed = index_in_process(settings, lookalike, files, source=source, tags=tag or [])
        failures += indexed.failures
        stored, near = indexed.stored, indexed.near
        summary = {
            "files": len(found),
            "stored": stored,
            "near_duplicates": near,
            "failed": [{"path": f.path, "error": f.error} for f in failures],
            "rows": lookalike.store.count(),
        }
        lookalike.close()
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(
        f"{summary['files']} files: {stored} stored ({near} near-duplicates), "
        f"{len(failures)} failed; "
        f"{summary['rows']} rows in {settings.collection!r}"
    )
    for failure in failures:
        console.print(f"  [red]failed[/] {failure.path}: {failure.error}")


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
    patches: Annotated[
        bool,
        typer.Option(
            "--patches",
            help="The Hamming stage also takes the stored images whose patch codes agree with "
            "the query's (off-centre crops); reads every row's patch codes first (about 5 s at "
            "100,000 rows, a minute at 1,000,000).",
        ),
    ] = False,
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
                by_patches = None
                if patches and not clip_only and text is None:
                    validate(query)  # before every row's patch codes are read
                    radius = patch_radius(settings.dedup_max_hamming)
                    by_patches = LoadedPatches(lookalike.store, radius)
                result = search(lookalike.store, lookalike.embedder, query, patches=by_patches)
            finally:
                lookalike.close()
    if as_json:
        print(json.dumps([hit.to_dict() for hit in result.hits], indent=2))  # noqa: T201
        return
    print_hits(result)


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
    indexes = f"clip {store.profile.clip_index}, phash {store.profile.phash_index}"
    stale = store.stale_indexes()
    if stale:
        indexes += f"; {', '.join(stale)} still on an earlier release's: `lookalike migrate`"
    table.add_row("indexes", indexes)
    console.print(table)
