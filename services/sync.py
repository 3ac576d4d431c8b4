"""The collection follows the disk: reconcile the rows with the files under some folders.

A path that no longer exists is removed from its row, and a row left with no path is deleted;
a file whose content (sha256) is already a row is a move or a copy, and joins that row, which
keeps everything it had (its cluster, its duplicate links, the decisions about it); a file with
new content is left for ingestion (``new_files``). Only paths under the given roots are looked
at: rows elsewhere are not touched.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from services.discovery import discover
from services.errors import FilterError
from services.filters import listing_any_path
from services.store import VectorStore


@dataclass(frozen=True)
class SyncPlan:
    """What reconciling would change; :func:`apply_sync` carries it out."""

    vanished: dict[str, list[str]] = field(default_factory=dict)  # row id -> paths gone
    moved: dict[str, list[str]] = field(default_factory=dict)  # row id -> paths found again
    emptied: list[str] = field(default_factory=list)  # row ids left with no path
    new_files: list[str] = field(default_factory=list)  # content no row has: to ingest
    unreadable: dict[str, str] = field(default_factory=dict)  # path -> why it was not hashed

    @property
    def removed_paths(self) -> list[str]:
        return sorted(p for paths in self.vanished.values() for p in paths)

    @property
    def moved_paths(self) -> list[str]:
        return sorted(p for paths in self.moved.values() for p in paths)

    @property
    def changes(self) -> int:
        return len(self.removed_paths) + len(self.moved_paths)

    def summary(self) -> dict[str, object]:
        return {
            "removed_paths": self.removed_paths,
            "moved_paths": self.moved_paths,
            "deleted_rows": sorted(self.emptied),
            "new_files": sorted(self.new_files),
            "unreadable": dict(sorted(self.unreadable.items())),
        }


_PATHS_PER_QUERY = 100


def _absolute(path: str | Path) -> str:
    return os.path.abspath(path)  # noqa: PTH100 - normalised, links not resolved (as discover)


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def stored_paths(store: VectorStore) -> dict[str, tuple[str, ...]]:
    """Every row's paths, by row id: one light scan, then the few rows with several paths."""
    paths = {r.id: r.all_paths for r in store.iterate(light=True)}
    for record in store.iterate("path_count > 1"):
        paths[record.id] = record.all_paths
    return paths


def plan_sync(
    store: VectorStore, roots: Sequence[str | Path], *, recursive: bool = True
) -> SyncPlan:
    """Compare the rows' paths under ``roots`` with the files there now."""
    folders = [_absolute(root) for root in roots]
    rows = stored_paths(store)
    owner = {path: row for row, paths in rows.items() for path in paths}
    on_disk = {
        str(found.path)
        for found in discover([Path(f) for f in folders], recursive=recursive)
        if found.problem is None
    }
    vanished: dict[str, list[str]] = {}
    for path, row in owner.items():
        if _under(path, folders) and path not in on_disk and not os.path.lexists(path):
            vanished.setdefault(row, []).append(path)
    moved: dict[str, list[str]] = {}
    new_files: list[str] = []
    unreadable: dict[str, str] = {}
    for path in sorted(on_disk - owner.keys()):
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            unreadable[path] = f"cannot read file: {exc.strerror or exc}"
            continue
        if digest in rows:
            moved.setdefault(digest, []).append(path)
        else:
            new_files.append(path)
    emptied = [
        row for row, gone in vanished.items() if not moved.get(row) and set(rows[row]) <= set(gone)
    ]
    return SyncPlan(vanished, moved, emptied, new_files, unreadable)


def apply_sync(store: VectorStore, plan: SyncPlan) -> None:
    """Write ``plan`` to the collection: rows gain and lose paths; emptied rows are deleted."""
    touched = sorted((plan.vanished.keys() | plan.moved.keys()) - set(plan.emptied))
    changed = []
    for record in store.get(touched, with_vectors=True):
        gone = set(plan.vanished.get(record.id, ()))
        kept = [p for p in record.all_paths if p not in gone]
        paths = list(dict.fromkeys([*kept, *plan.moved.get(record.id, ())]))
        changed.append(replace(record, path=paths[0], paths=tuple(paths)))
    store.replace(changed)
    store.delete(plan.emptied)


def remove_paths(store: VectorStore, paths: Iterable[str]) -> SyncPlan:
    """Take ``paths`` (files deleted or moved away) out of their rows; a row left with none is
    deleted. For a watcher, which knows which paths went."""
    gone = sorted({_absolute(p) for p in paths if not os.path.lexists(p)})
    if not gone:
        return SyncPlan()
    rows: dict[str, tuple[str, ...]] = {}
    try:
        for start in range(0, len(gone), _PATHS_PER_QUERY):
            expr = listing_any_path(gone[start : start + _PATHS_PER_QUERY])
            rows.update((r.id, r.all_paths) for r in store.iterate(expr))
    except FilterError:  # a name no filter can spell (control characters): look at every row
        rows = stored_paths(store)
    vanished = {
        row: [p for p in row_paths if p in gone]
        for row, row_paths in rows.items()
        if set(gone) & set(row_paths)
    }
    emptied = [row for row, lost in vanished.items() if set(rows[row]) <= set(lost)]
    plan = SyncPlan(vanished=vanished, emptied=emptied)
    apply_sync(store, plan)
    return plan
