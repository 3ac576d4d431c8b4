"""``lookalike dedup``, ``decide``, ``undo`` and ``eval``: duplicate groups over the whole
collection, and putting a quarantine move back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.table import Table

from cli.common import console, existing_collection, fail, handle_errors, settings_of

if TYPE_CHECKING:
    from services.dedup import DedupReport


def dedup(
    ctx: typer.Context,
    where: Annotated[
        list[str] | None, typer.Option(help="Only rows matching FIELD OP VALUE (repeatable).")
    ] = None,
    max_hamming: Annotated[
        int | None,
        typer.Option(
            help="pHash radius (inclusive), over flips and rotations "
            "[default: LOOKALIKE_DEDUP_MAX_HAMMING, 8]."
        ),
    ] = None,
    min_cosine: Annotated[
        float | None,
        typer.Option(help="Also pair images with CLIP cosine >= this (collections with CLIP)."),
    ] = None,
    exact_only: Annotated[bool, typer.Option(help="Byte-identical files only.")] = False,
    keep: Annotated[
        list[str] | None,
        typer.Option(
            help="Keeper policy, in order: pixels, bytes, oldest, format:PNG,JPEG, path:REGEX "
            "(repeatable; default pixels, bytes, oldest)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    csv_file: Annotated[
        Path | None, typer.Option("--csv", help="Write one row per member.")
    ] = None,
    move_to: Annotated[
        str | None,
        typer.Option(
            help="Move duplicates (never keepers) under this folder, or (s3:// rows) under "
            "s3://BUCKET/PREFIX; writes a manifest there for `lookalike undo`."
        ),
    ] = None,
    delete: Annotated[
        bool, typer.Option(help="Delete duplicates, files and s3:// objects (needs --yes).")
    ] = False,
    yes: Annotated[bool, typer.Option(help="Confirm --delete.")] = False,
) -> None:
    """Find every group of duplicates: exact (same bytes) and near (pHash, CLIP).

    By default no file changes. Groups are anchored on their keeper, so unrelated images are
    never chained together; resolved groups and groups marked not-duplicates do not come back.
    The result is kept in Redis as the collection's last one: the UI's Duplicates page shows it.
    """
    import time

    from services.decisions import RedisDecisions
    from services.dedup import DedupOptions, find_duplicates, resolve
    from services.filters import compile_filter, parse_where
    from services.keepers import parse_policy
    from services.kept_dedup import KeptResult, RedisKeptResults

    settings = settings_of(ctx)
    if delete and not yes:
        fail("--delete removes files: add --yes to confirm")
    if delete and move_to is not None:
        fail("choose --move-to or --delete, not both")
    with handle_errors():
        expr = compile_filter([c for clause in where or [] for c in parse_where(clause)])
        policy = parse_policy(keep or [])
    with handle_errors(), existing_collection(settings) as store:
        decisions = RedisDecisions.from_url(settings.redis_url, settings.collection)
        radius = settings.dedup_max_hamming if max_hamming is None else max_hamming
        options = DedupOptions(radius, min_cosine, exact_only, expr)
        started = time.perf_counter()
        report = find_duplicates(store, policy, options, decisions)
        kept = KeptResult.of(
            report,
            collection=store.collection,
            instance=store.instance,
            options=options,
            policy=keep or [],
            seconds=time.perf_counter() - started,
            origin="cli",
        )
        RedisKeptResults.from_url(settings.redis_url, settings.collection).save(kept)
        resolution = resolve(
            store,
            report.groups,
            move_to=None if move_to is None else _location(move_to),
            delete_files=delete,
            decisions=decisions,
        )
    if csv_file is not None:
        _write_csv(csv_file, report)
    if as_json:
        payload = report.to_dict()
        if resolution.actions:
            payload["actions"] = [a.__dict__ for a in resolution.actions]
        if resolution.manifest is not None:
            payload["manifest"] = str(resolution.manifest)
        console.print_json(json.dumps(payload))
    else:
        _print_groups(report)
        if resolution.manifest is not None:
            console.print(
                f"manifest written to {resolution.manifest}; "
                f"to put the files back: lookalike undo {resolution.manifest}"
            )
    for action in resolution.failed:
        console.print(f"[red]not changed[/] {action.path}: {action.error}")
    if resolution.failed:
        raise typer.Exit(1)


def undo(
    ctx: typer.Context,
    manifest: Annotated[
        str,
        typer.Argument(
            help="The .lookalike-manifest-*.jsonl that `dedup --move-to` wrote (a path, or "
            "an s3:// URI)."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option(help="Check every entry and say what would happen; change nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the outcomes as JSON.")] = False,
) -> None:
    """Put files that `lookalike dedup --move-to` quarantined back where they were.

    Each file goes back to its original path (never over a file there now), its row lists the
    path again, the keeper gives back what it gained, and the group is no longer resolved.
    Exits 1 if any entry could not be restored; the others are restored all the same.
    """
    from services.decisions import RedisDecisions
    from services.undo import undo as undo_manifest

    settings = settings_of(ctx)
    with handle_errors(), existing_collection(settings) as store:
        decisions = RedisDecisions.from_url(settings.redis_url, settings.collection)
        report = undo_manifest(store, _location(manifest), decisions, dry_run=dry_run)
    if as_json:
        console.print_json(json.dumps({"outcomes": [o.__dict__ for o in report.outcomes]}))
    else:
        for outcome in report.outcomes:
            if outcome.done:
                console.print(f"[green]{outcome.status}[/] {outcome.original}")
            else:
                console.print(
                    f"[red]not restored[/] {outcome.original or manifest}: {outcome.error}"
                )
        done = len(report.outcomes) - len(report.failed)
        verb = "would restore" if dry_run else "restored"
        console.print(f"{verb} {done} of {len(report.outcomes)} entries of {manifest}")
    if report.failed:
        raise typer.Exit(1)


def _location(text: str) -> Path | str:
    """A local path as a Path; an s3:// (or other) URI as given, for the core to check."""
    return text if "://" in text else Path(text)


def decide(
    ctx: typer.Context,
    verdict: Annotated[str, typer.Argument(help="not-duplicates or resolved")],
    keeper: Annotated[str, typer.Argument(help="Id of the group's keeper.")],
    members: Annotated[list[str], typer.Argument(help="Ids of the other members.")],
) -> None:
    """Record a verdict on a duplicate group, so `lookalike dedup` does not show it again."""
    from services.decisions import RedisDecisions

    settings = settings_of(ctx)
    kinds: dict[str, Literal["not_duplicates", "resolved"]] = {
        "not-duplicates": "not_duplicates",
        "resolved": "resolved",
    }
    if verdict not in kinds:
        fail("the verdict is not-duplicates or resolved")
    with handle_errors():
        RedisDecisions.from_url(settings.redis_url, settings.collection).record(
            kinds[verdict],
            keeper,
            members,
        )
    console.print(f"recorded: {verdict} for {1 + len(members)} images")


def _write_csv(path: Path, report: DedupReport) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["group", "kind", "role", "path", "id", "hamming", "cosine", "reason"])
        for number, group in enumerate(report.groups, 1):
            for member in group.members:
                role = "keep" if member is group.keeper else "duplicate"
                writer.writerow(
                    [
                        number,
                        group.kind,
                        role,
                        member.path,
                        member.id,
                        "" if member.hamming is None else member.hamming,
                        "" if member.cosine is None else f"{member.cosine:.6f}",
                        member.reason,
                    ]
                )


def _print_groups(report: DedupReport) -> None:
    for number, group in enumerate(report.groups, 1):
        console.print(f"[bold]group {number}[/] ({group.kind}, {len(group.members)} images)")
        console.print(f"  [green]keep[/] {group.keeper.path}  ({group.keeper.reason})")
        for member in group.duplicates:
            console.print(f"  [yellow]dup[/]  {member.path}  ({member.reason})")
    stats = ", ".join(f"{k} {v}" for k, v in report.stats.items())
    console.print(f"{len(report.groups)} groups; {stats}")


def eval_command(
    ctx: typer.Context,
    ground_truth: Annotated[
        Path, typer.Argument(help="CSV with a header path,group (relative paths: from its folder).")
    ],
    where: Annotated[
        list[str] | None, typer.Option(help="Only rows matching FIELD OP VALUE (repeatable).")
    ] = None,
    png: Annotated[
        Path | None, typer.Option(help="Write the precision-recall curve to this PNG.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Precision, recall and F1 of duplicate pairs against labelled groups, per threshold.

    Every pair of stored paths that the CSV labels is a question (a positive when both share a
    group); pHash radii 0..16 (over flips and rotations and the frame codes, exactly the pairs
    `lookalike dedup` links by hashes) and, where the
    collection stores CLIP, minimum cosines 0.80..0.99. A content stored under several paths
    counts once per path, so exact copies are pairs at distance 0.
    """
    from services.evaluation import (
        best_f1,
        evaluate_clip,
        evaluate_dedup,
        items_from_records,
        labelled,
        load_ground_truth,
        pr_curve_png,
    )
    from services.filters import compile_filter, parse_where

    settings = settings_of(ctx)
    with handle_errors():
        truth = load_ground_truth(ground_truth)
        expr = compile_filter([c for clause in where or [] for c in parse_where(clause)])
    with handle_errors(), existing_collection(settings) as store:
        items = items_from_records(store.iterate(expr, with_vectors=store.has_clip))
        found = labelled(items, truth)
        curves = {"pHash": evaluate_dedup(found, truth)}
        if store.has_clip:
            curves["CLIP"] = evaluate_clip(found, truth)
        if png is not None:
            pr_curve_png(curves, png)
    missing = len(truth) - len(found)
    if as_json:
        payload = {
            "labelled": len(truth),
            "found": len(found),
            "results": {k: [r.to_dict() for r in v] for k, v in curves.items()},
            "best": {k: best_f1(v).to_dict() for k, v in curves.items()},
        }
        console.print_json(json.dumps(payload))
        return
    console.print(
        f"{len(found)} of {len(truth)} labelled paths are in {settings.collection!r}"
        + (f" ([yellow]{missing} missing, not counted[/])" if missing else "")
    )
    for name, results in curves.items():
        best = best_f1(results)
        table = Table("threshold", "TP", "FP", "FN", "precision", "recall", "F1", title=name)
        for result in results:
            mark = " [bold green]<- best F1[/]" if result is best else ""
            threshold = (
                f"cos >= {result.threshold:.2f}" if name == "CLIP" else f"r <= {result.threshold:g}"
            )
            table.add_row(
                threshold,
                str(result.tp),
                str(result.fp),
                str(result.fn),
                f"{result.precision:.4f}",
                f"{result.recall:.4f}",
                f"{result.f1:.4f}" + mark,
            )
        console.print(table)
    if png is not None:
        console.print(f"PR curve written to {png}")
