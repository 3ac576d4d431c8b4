"""Resolving keeps information, and a quarantine move can be undone: on a real Milvus Lite."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import pytest

from services.dedup import DedupOptions, find_duplicates, resolve
from services.errors import QueryError
from services.keepers import parse_policy
from services.manifest import read_manifest
from services.merge import Gain, absorb, revert
from services.records import ImageRecord
from services.store import MilvusStore
from services.undo import undo
from tests.conftest import StoreFactory
from tests.services.test_dedup import BASE, MemoryDecisions, flip, names, record

pytestmark = pytest.mark.integration

TAKEN = datetime(2019, 5, 4, 10, 0, 0)
OLDER = datetime(2019, 5, 4, 9, 59, 0)


@dataclass
class Library:
    root: Path
    quarantine: Path
    files: dict[str, Path]  # name -> path
    rows: dict[str, ImageRecord]  # name -> row as first stored

    def bytes_of(self) -> dict[str, bytes]:
        return {name: path.read_bytes() for name, path in self.files.items()}


def _stored(store: MilvusStore, name: str, library: Library) -> ImageRecord:
    [row] = store.get([library.rows[name].id], with_vectors=True)
    return row


def _library(store: MilvusStore, tmp_path: Path) -> Library:
    """A keeper that knows nothing, two near copies that know things, and a byte-identical
    backup of the keeper; every row's id is the sha256 of its file, as ingestion makes it."""
    root = tmp_path / "library"
    files = {
        "keep.jpg": root / "2019" / "keep.jpg",
        "copy.jpg": root / "2019" / "copy.jpg",
        "phone.jpg": root / "phone" / "phone.jpg",
        "backup.jpg": root / "backup" / "keep.jpg",
    }
    content = {"keep.jpg": b"keeper", "copy.jpg": b"a copy", "phone.jpg": b"from the phone"}
    content["backup.jpg"] = content["keep.jpg"]
    for name, path in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content[name])

    def row(name: str, phash: int, **fields: object) -> ImageRecord:
        base = replace(record(name, phash), **fields)  # type: ignore[arg-type]
        return replace(base, id=hashlib.sha256(content[name]).hexdigest(), path=str(files[name]))

    keep = row("keep.jpg", BASE, width=4000, height=3000, tags=("album",))
    keep = replace(keep, paths=(str(files["keep.jpg"]), str(files["backup.jpg"])))
    copy = row(
        "copy.jpg", flip(BASE, 1), tags=("trip", "album"), exif_datetime=TAKEN, source="scans"
    )
    phone = row(
        "phone.jpg",
        flip(BASE, 2),
        tags=("family",),
        exif_datetime=OLDER,
        gps_lat=48.85,
        gps_lon=2.35,
        camera_make="Apple",
        camera_model="iPhone 12",
    )
    store.upsert([keep, copy, phone])
    rows = {"keep.jpg": keep, "copy.jpg": copy, "phone.jpg": phone}
    return Library(root, tmp_path / "quarantine", files, rows)


def _dedup(store: MilvusStore, decisions: MemoryDecisions) -> list[tuple[str, list[str]]]:
    report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    return sorted(names(g) for g in report.groups)


def test_the_keeper_gains_what_its_duplicates_carried_and_undo_gives_it_all_back(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_dim=4)
    library = _library(store, tmp_path)
    original_bytes = library.bytes_of()
    decisions = MemoryDecisions()
    before = _stored(store, "keep.jpg", library)
    assert before.tags == ("album",) and before.source == "" and before.exif_datetime is None
    assert not before.has_gps and before.camera_make == ""
    assert _dedup(store, decisions) == [
        ("keep.jpg", ["copy.jpg", "phone.jpg"]),
        ("keep.jpg", ["keep.jpg"]),
    ]

    report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    resolution = resolve(
        store, report.groups, move_to=library.quarantine, delete_files=False, decisions=decisions
    )
    assert resolution.failed == [] and resolution.manifest is not None

    keeper = _stored(store, "keep.jpg", library)
    assert keeper.all_paths == (str(library.files["keep.jpg"]),)
    assert set(keeper.tags) == {"album", "trip", "family"} and keeper.tags[0] == "album"
    assert keeper.source == "scans"
    assert keeper.exif_datetime == OLDER  # the oldest date a duplicate carried
    assert (keeper.gps_lat, keeper.gps_lon) == (48.85, 2.35)
    assert (keeper.camera_make, keeper.camera_model) == ("Apple", "iPhone 12")
    assert {r.id for r in store.iterate()} == {keeper.id}
    history = decisions.history[keeper.id]
    assert sorted(str(e["path"]) for e in history) == sorted(
        str(library.files[n]) for n in ("copy.jpg", "phone.jpg", "backup.jpg")
    )
    assert all(e["event"] == "moved" and e["manifest"] == str(resolution.manifest) for e in history)

    # The manifest lies in the quarantine and lists every moved file.
    manifest = read_manifest(resolution.manifest)
    assert resolution.manifest.parent == library.quarantine
    moved = {a.path: a.target for a in resolution.actions}
    assert {(e.original, e.quarantine) for e in manifest.entries} == set(moved.items())
    assert all(e.keeper_id == keeper.id for e in manifest.entries)
    assert all(Path(str(t)).is_file() for t in moved.values())
    assert _dedup(store, decisions) == []

    dry = undo(store, resolution.manifest, decisions, dry_run=True)
    assert {o.status for o in dry.outcomes} == {"would restore"}
    assert all(not library.files[n].exists() for n in ("copy.jpg", "phone.jpg", "backup.jpg"))

    result = undo(store, resolution.manifest, decisions)
    assert result.failed == [] and len(result.outcomes) == 3
    assert library.bytes_of() == original_bytes  # every file back, byte-identical
    restored = {r.id: r for r in store.get([r.id for r in library.rows.values()])}
    for name, row in library.rows.items():
        assert set(restored[row.id].all_paths) == set(row.all_paths), name
        assert restored[row.id].tags == row.tags
    keeper = restored[library.rows["keep.jpg"].id]
    assert keeper.source == "" and keeper.exif_datetime is None and not keeper.has_gps
    assert keeper.camera_make == "" and keeper.camera_model == ""
    assert _dedup(store, decisions) == [
        ("keep.jpg", ["copy.jpg", "phone.jpg"]),
        ("keep.jpg", ["keep.jpg"]),
    ]

    again = undo(store, resolution.manifest, decisions)  # harmless: all already back
    assert {o.status for o in again.outcomes} == {"already restored"}


def test_undo_never_overwrites_and_reports_each_bad_entry(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_dim=4)
    library = _library(store, tmp_path)
    decisions = MemoryDecisions()
    report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    resolution = resolve(
        store, report.groups, move_to=library.quarantine, delete_files=False, decisions=decisions
    )
    assert resolution.manifest is not None
    targets = {Path(a.path).name: Path(str(a.target)) for a in resolution.actions}
    library.files["copy.jpg"].write_bytes(b"a new file made since")  # recreated: never overwritten
    targets["phone.jpg"].unlink()  # the quarantined copy is gone
    with resolution.manifest.open("a") as handle:
        handle.write("not json\n" + json.dumps({"original": "/x.jpg"}) + "\n")

    result = undo(store, resolution.manifest, decisions)
    errors = sorted(str(o.error) for o in result.failed)
    assert len(errors) == 4
    assert any(f"{library.files['copy.jpg']} exists; not overwritten" in e for e in errors)
    assert any("quarantined file" in e and "is gone" in e for e in errors)
    assert sum("is not a manifest entry" in e for e in errors) == 2
    assert library.files["copy.jpg"].read_bytes() == b"a new file made since"
    assert targets["copy.jpg"].read_bytes() == b"a copy"  # still in the quarantine
    # The good entry is restored all the same: the backup path is on the keeper's row again.
    assert library.files["backup.jpg"].read_bytes() == b"keeper"
    keeper = _stored(store, "keep.jpg", library)
    assert str(library.files["backup.jpg"]) in keeper.all_paths
    assert store.get([library.rows["copy.jpg"].id]) == []  # not restored: its row stays gone

    with pytest.raises(QueryError, match="no manifest at"):
        undo(store, tmp_path / "nowhere.jsonl", decisions)
    (tmp_path / "groups.json").write_text('{"groups": []}\n')
    with pytest.raises(QueryError, match="is not a lookalike quarantine manifest"):
        undo(store, tmp_path / "groups.json", decisions)
    other = make_store(clip_dim=4)
    with pytest.raises(QueryError, match="was written for collection"):
        undo(other, resolution.manifest, decisions)


def test_deleting_still_merges_into_the_keeper(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(clip_dim=4)
    library = _library(store, tmp_path)
    decisions = MemoryDecisions()
    report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    resolution = resolve(store, report.groups, move_to=None, delete_files=True, decisions=decisions)
    assert resolution.manifest is None and resolution.failed == []
    keeper = _stored(store, "keep.jpg", library)
    assert keeper.source == "scans" and keeper.has_gps and "family" in keeper.tags
    assert {e["event"] for e in decisions.history[keeper.id]} == {"deleted"}


def test_absorb_takes_only_what_the_keeper_lacks_and_revert_spares_later_edits() -> None:
    keeper = replace(record("k.jpg", BASE), tags=("a",), exif_datetime=TAKEN, source="nas")
    first = replace(record("d1.jpg", BASE), tags=("a", "b"), exif_datetime=OLDER, source="phone")
    second = replace(record("d2.jpg", BASE), camera_make="Canon", gps_lat=1.0, gps_lon=2.0)
    merged, gains = absorb(keeper, [first, second])
    assert merged.tags == ("a", "b") and merged.exif_datetime == TAKEN and merged.source == "nas"
    assert (merged.camera_make, merged.camera_model) == ("Canon", "")
    assert gains[first.id] == Gain(tags=("b",))
    assert gains[second.id] == Gain(gps=(1.0, 2.0), camera=("Canon", ""))
    assert Gain.from_dict(json.loads(json.dumps(gains[second.id].to_dict()))) == gains[second.id]
    edited = replace(merged, camera_make="Nikon")  # changed by someone since: stays
    back = revert(edited, list(gains.values()))
    assert back.tags == ("a",) and not back.has_gps and back.camera_make == "Nikon"
