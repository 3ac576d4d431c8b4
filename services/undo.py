"""Undoing a quarantine move from its manifest (``lookalike undo``).

Per entry: the quarantined file goes back to its original path (never over a file that is there
now, and only if its bytes are still the content the row describes); the row lists the path
again, re-created from the manifest when the move had deleted it; the keeper gives back what it
gained from that duplicate; and the pair is no longer "resolved", so dedup shows it again. An entry
that fails is reported and the others are still restored. Running it again is harmless: an entry
already back in place counts as restored.

An object quarantined under an ``s3://`` prefix goes back the same way: copied to its original
key (never over an object there now) and checked, then the quarantined copy is deleted
(:func:`services.objectops.restore`).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from services import fileops, objectops
from services.dedup import Decisions
from services.errors import QueryError
from services.manifest import ManifestEntry, read_manifest
from services.merge import revert
from services.records import ImageRecord
from services.sources import scheme_of
from services.store import VectorStore

log = logging.getLogger(__name__)

Status = Literal["restored", "already restored", "would restore", "failed"]


@dataclass(frozen=True)
class EntryOutcome:
    """What happened to one manifest entry (``original`` is "" for a line that is no entry)."""

    original: str
    quarantine: str
    status: Status
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status != "failed"


@dataclass(frozen=True)
class UndoReport:
    manifest: Path | str
    outcomes: list[EntryOutcome]

    @property
    def failed(self) -> list[EntryOutcome]:
        return [o for o in self.outcomes if not o.done]


def undo(
    store: VectorStore,
    manifest_path: Path | str,
    decisions: Decisions | None,
    *,
    dry_run: bool = False,
) -> UndoReport:
    """Restore what the manifest at ``manifest_path`` lists; raises QueryError when it is no
    manifest or belongs to another collection. ``dry_run``: check every entry, change nothing."""
    manifest = read_manifest(manifest_path)
    if manifest.collection != store.collection:
        raise QueryError(
            f"{manifest_path} was written for collection {manifest.collection!r}, not "
            f"{store.collection!r}: set LOOKALIKE_COLLECTION={manifest.collection}"
        )
    outcomes = [EntryOutcome("", "", "failed", why) for _, why in manifest.problems]
    back: list[ManifestEntry] = []  # files in place now: their rows and decisions to restore
    moved: list[ManifestEntry] = []  # moved back by this run: their keepers' gains to revert
    for entry in manifest.entries:
        outcome = _restore_file(entry, dry_run=dry_run)
        outcomes.append(outcome)
        if outcome.status in ("restored", "already restored"):
            back.append(entry)
        if outcome.status == "restored":
            moved.append(entry)
    if back:
        _restore_rows(store, back, moved)
        if decisions is not None:
            _restore_decisions(decisions, back, moved, manifest_path)
    return UndoReport(manifest_path, outcomes)


def _restore_file(entry: ManifestEntry, *, dry_run: bool) -> EntryOutcome:
    if scheme_of(entry.original) == "s3":
        return _restore_object(entry, dry_run=dry_run)
    quarantined, original = Path(entry.quarantine), Path(entry.original)

    def failed(why: str) -> EntryOutcome:
        return EntryOutcome(entry.original, entry.quarantine, "failed", why)

    if not quarantined.is_file():
        if original.is_file() and _sha256(original) == entry.id:
            return EntryOutcome(entry.original, entry.quarantine, "already restored")
        return failed(f"quarantined file {quarantined} is gone; {original} not restored")
    if _sha256(quarantined) != entry.id:
        return failed(f"{quarantined} changed since it was quarantined (sha256); not restored")
    if original.exists() or original.is_symlink():
        return failed(f"{original} exists; not overwritten (the copy stays at {quarantined})")
    if dry_run:
        return EntryOutcome(entry.original, entry.quarantine, "would restore")
    action = fileops.restore(quarantined, original)
    if not action.done:
        return failed(str(action.error))
    return EntryOutcome(entry.original, entry.quarantine, "restored")


def _restore_object(entry: ManifestEntry, *, dry_run: bool) -> EntryOutcome:
    quarantined, original = entry.quarantine, entry.original

    def failed(why: str) -> EntryOutcome:
        return EntryOutcome(original, quarantined, "failed", why)

    try:
        if not objectops.exists(quarantined):
            if objectops.exists(original) and objectops.sha256_of(original) == entry.id:
                return EntryOutcome(original, quarantined, "already restored")
            return failed(f"quarantined object {quarantined} is gone; {original} not restored")
        if objectops.sha256_of(quarantined) != entry.id:
            return failed(f"{quarantined} changed since it was quarantined (sha256); not restored")
        if objectops.exists(original):
            return failed(f"{original} exists; not overwritten (the copy stays at {quarantined})")
    except objectops.ObjectError as exc:
        return failed(str(exc))
    if dry_run:
        return EntryOutcome(original, quarantined, "would restore")
    action = objectops.restore(quarantined, original)
    if not action.done:
        return failed(str(action.error))
    return EntryOutcome(original, quarantined, "restored")


def _restore_rows(
    store: VectorStore, back: Sequence[ManifestEntry], moved: Sequence[ManifestEntry]
) -> None:
    """Rows list the restored paths again (re-created when gone); keepers give back gains."""
    ids = sorted({e.id for e in back} | {e.keeper_id for e in moved})
    rows: dict[str, ImageRecord] = {r.id: r for r in store.get(ids, with_vectors=True)}
    for entry in back:
        current = rows.get(entry.id)
        if current is None:  # the move deleted the row: it comes back as it was, at this path
            rows[entry.id] = replace(entry.row, path=entry.original, paths=(entry.original,))
        elif entry.original not in current.all_paths:
            rows[entry.id] = replace(current, paths=(*current.all_paths, entry.original))
    for entry in moved:
        keeper = rows.get(entry.keeper_id)
        if keeper is not None and entry.gained:
            rows[entry.keeper_id] = revert(keeper, [entry.gained])
    store.replace(list(rows.values()))


def _restore_decisions(
    decisions: Decisions,
    back: Sequence[ManifestEntry],
    moved: Sequence[ManifestEntry],
    manifest_path: Path | str,
) -> None:
    """Restored pairs are no longer "resolved"; each keeper's history says what came back."""
    reopened: dict[str, list[str]] = {}
    for entry in back:
        if entry.id != entry.keeper_id:
            reopened.setdefault(entry.keeper_id, []).append(entry.id)
    for keeper, members in reopened.items():
        decisions.reopen(keeper, members)
    events: dict[str, list[dict[str, object]]] = {}
    now = time.time()
    for entry in moved:
        events.setdefault(entry.keeper_id, []).append(
            {
                "event": "restored",
                "id": entry.id,
                "path": entry.original,
                "target": entry.quarantine,
                "manifest": str(manifest_path),
                "gained": entry.gained.to_dict(),
                "at": now,
            }
        )
    for keeper, history in events.items():
        decisions.record_history(keeper, history)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
