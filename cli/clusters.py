"""``lookalike clusters``: k-means or density clusters of the CLIP vectors, written back."""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cli.common import console, existing_collection, fail, handle_errors, settings_of


def clusters(
    ctx: typer.Context,
    k: Annotated[int | None, typer.Option("--k", help="Number of k-means clusters.")] = None,
    auto: Annotated[
        bool, typer.Option("--auto", help="Pick k in 2..30 by silhouette on a sample.")
    ] = False,
    method: Annotated[
        str, typer.Option(help="kmeans, or density (HDBSCAN; finds k itself, noise is -1).")
    ] = "kmeans",
    where: Annotated[
        list[str] | None, typer.Option(help="Only rows matching FIELD OP VALUE (repeatable).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print clusters and stats as JSON.")
    ] = False,
    points: Annotated[
        bool, typer.Option("--points", help="With --json: every image's 2-D position and score.")
    ] = False,
) -> None:
    """Cluster the CLIP vectors and write each image's cluster id to the `cluster` field.

    Prints each cluster's size and its most representative images; `--where cluster == 3`
    then selects a cluster in other commands. A later run keeps the ids of the clusters it
    finds again, so it rewrites only the images that joined or moved.
    """
    from rich.progress import TaskID

    from services.clusters import cluster_collection
    from services.filters import compile_filter, parse_where

    settings = settings_of(ctx)
    methods: dict[str, Literal["kmeans", "density"]] = {"kmeans": "kmeans", "density": "density"}
    if method not in methods:
        fail("--method is kmeans or density")
    if method == "kmeans" and (k is None) == (not auto):
        fail("k-means needs --k K or --auto (one of them)")
    if method == "density" and k is not None:
        fail("--k is for k-means; the density method finds the number of clusters itself")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TimeElapsedColumn())
    with handle_errors():
        expr = compile_filter([c for clause in where or [] for c in parse_where(clause)])
    with (
        handle_errors(),
        existing_collection(settings) as store,
        Progress(*columns, console=console, disable=as_json) as bar,
    ):
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, fraction: float) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=1.0)
            bar.update(tasks[stage], completed=fraction)

        report = cluster_collection(
            store, k=None if auto else k, method=methods[method], where=expr, progress=advance
        )
    from services import cluster_map

    # The UI's Clusters page shows the last run's map.
    cluster_map.save(report, cluster_map.map_file(settings.home, settings.collection))
    if as_json:
        console.print_json(json.dumps(report.to_dict(with_points=points)))
        return
    table = Table("cluster", "images", "mean distance", "representative images")
    for info in report.clusters:
        paths = "\n".join(path for _, path in info.representatives)
        table.add_row(str(info.id), str(info.size), f"{info.mean_distance:.3f}", paths)
    console.print(table)
    console.print(", ".join(f"{name} {value}" for name, value in report.stats.items()))
