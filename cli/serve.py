"""``lookalike up``, ``ui`` and ``demo``: the embedded stack and the UI on this machine."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.table import Table

from cli.common import console, fail, handle_errors, print_hits, settings_of, stop_on_signals
from cli.jobs import follow, report
from cli.stack.net import port_open
from cli.stack.stack import ProcessSpec, Stack, child_env
from cli.stack.supervisor import run_foreground
from services.ledger import JobLedger
from services.producer import IngestRequest, Producer
from services.queue import celery_app
from services.settings import Settings
from services.store import MilvusStore
from ui.launch import local_host, streamlit_argv, url


def up(
    ctx: typer.Context,
    ui: Annotated[bool, typer.Option(help="Also run the UI (LOOKALIKE_UI_PORT).")] = True,
) -> None:
    """Start the embedded stack: Milvus Lite, Redis, workers and the UI (Ctrl-C stops all)."""
    settings = settings_of(ctx)
    with handle_errors(), _running_stack(settings, ui=ui) as stack:
        _print_stack(stack)
        _serve(stack)


def ui_command(ctx: typer.Context) -> None:
    """Run the Streamlit UI alone, until Ctrl-C.

    Pages: Search, Duplicates, Clusters, Ingest, Collection. Milvus and Redis must be running
    (`lookalike up` runs everything, the UI included).
    """
    settings = settings_of(ctx)
    stop_on_signals()
    console.print(f"lookalike UI at {url(settings)} (collection {settings.collection!r})")
    spec = ui_process(settings)
    env = child_env(settings, os.environ)
    raise typer.Exit(run_foreground(spec.name, spec.argv, env, stop_grace=spec.stop_grace))


def ui_process(settings: Settings, env: Mapping[str, str] | None = None) -> ProcessSpec:
    """The UI as a child of the stack; ready once its port accepts connections."""
    host = local_host(settings)
    return ProcessSpec(
        name="ui",
        argv=streamlit_argv(settings),
        address=url(settings),
        env=dict(env or {}),
        ready=lambda: port_open(settings.ui_port, host),
        ready_timeout=60.0,
    )


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
    from cli.demo import DEMO_COLLECTION, DEMO_QUERY, build_demo_collection, example_search
    from services.app import VECTOR_CACHE_FOLDER
    from services.embed import create_embedder
    from services.errors import ModelError
    from services.store import drop_collection

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
            drop_collection(
                stack.milvus_uri,
                DEMO_COLLECTION,
                token=settings.milvus_secret,
                # Whether or not caches are kept now: an earlier run's must not outlive it.
                vector_cache=settings.home / VECTOR_CACHE_FOLDER,
            )
            ledger = JobLedger.from_url(stack.redis_url)
            producer = Producer(settings, ledger, celery_app(settings), stack.milvus_uri)
            request = IngestRequest(roots=(str(root),), source="demo", collection=DEMO_COLLECTION)
            job_id = producer.start(request)
            progress = follow(ledger, job_id, quiet=False, stall_seconds=settings.stall_seconds)
            report(ledger, progress, waited=True, as_json=False)
            console.print(f"search for {DEMO_QUERY} (a mirrored copy of the original):")
            print_hits(example_search(settings, stack.milvus_uri, embedder))
            if embedder is not None:
                _demo_clusters(settings, stack.milvus_uri, DEMO_COLLECTION)
            if serve:
                console.print(f"UI: {url(settings)} (collection {DEMO_COLLECTION!r})")
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
    from services.app import vector_cache_root
    from services.clusters import cluster_collection
    from services.store import stored_contract

    contract = stored_contract(uri, collection, token=settings.milvus_secret)
    if contract is None or contract.clip_dim is None:
        return
    store = MilvusStore.connect(
        uri,
        collection,
        contract,
        token=settings.milvus_secret,
        vector_cache=vector_cache_root(settings),
    )
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
    stop_on_signals()
    stack = Stack(settings, extra_processes=[ui_process(settings, ui_env)] if ui else ())
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
