"""The collection follows the disk: reconcile rows with files, on a real Milvus Lite server."""

from __future__ import annotations

import shutil
from pathlib import Path

from services.ingestion import MatchPolicy, ProcessLocks, ingest_paths
from services.store import VectorStore
from services.sync import apply_sync, plan_sync, remove_paths
from testkit.imagegen import make_photo_like
from tests.conftest import StoreFactory


def _photos(folder: Path, seeds: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"p{seed}.jpg"
        make_photo_like(seed, (96, 72)).save(path, quality=90)
        paths.append(path)
    return paths


def _ingest(store: VectorStore, paths: list[Path]) -> None:
    ingest_paths(
        store,
        None,
        [str(p) for p in paths],
        locks=ProcessLocks(),
        policy=MatchPolicy(8, 0.95),
        max_pixels=10**8,
    )


def test_sync_removes_gone_paths_keeps_moved_rows_and_finds_new_files(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    library, elsewhere = tmp_path / "library", tmp_path / "elsewhere"
    photos = _photos(library, range(6))
    copy = Path(shutil.copy(photos[0], library / "copy_of_p0.jpg"))
    outside = _photos(elsewhere, range(10, 12))
    _ingest(store, [*photos, copy, *outside])
    before = {r.id: r for r in store.iterate()}
    moved_row = next(r for r in before.values() if r.path == str(photos[1]))

    photos[2].unlink()  # deleted: its row goes
    copy.unlink()  # one of two paths of a content: the row stays, with one path
    (library / "sub").mkdir()
    moved_to = photos[1].rename(library / "sub" / "renamed.jpg")  # moved: same row
    new = _photos(library / "new", range(20, 22))  # new content: for ingestion
    outside[0].unlink()  # not under the synced root: not touched

    plan = plan_sync(store, [library])
    assert plan.summary()["removed_paths"] == sorted(str(p) for p in (photos[1], photos[2], copy))
    assert plan.summary()["moved_paths"] == [str(moved_to)]
    assert sorted(plan.new_files) == sorted(str(p) for p in new)
    assert len(plan.emptied) == 1
    assert {r.id: r.all_paths for r in store.iterate()} == {
        i: r.all_paths for i, r in before.items()
    }  # planning changes nothing

    apply_sync(store, plan)
    after = {r.id: r for r in store.iterate()}
    assert len(after) == len(before) - 1
    assert after[moved_row.id].all_paths == (str(moved_to),)
    assert after[moved_row.id].ingested_at == moved_row.ingested_at  # the same row, kept
    stored = sorted(p for r in after.values() for p in r.all_paths)
    expected = [photos[0], moved_to, *photos[3:], *outside]
    assert stored == sorted(str(p) for p in expected)
    assert plan_sync(store, [library]).changes == 0  # in step now (the new files aside)


def test_remove_paths_takes_only_what_is_gone(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    photos = _photos(tmp_path, range(3))
    odd = tmp_path / 'quote " and back\\slash.jpg'
    shutil.copy(photos[2], odd)
    _ingest(store, [*photos, odd])
    photos[0].unlink()
    odd.unlink()
    plan = remove_paths(store, [str(photos[0]), str(photos[1]), str(odd)])  # photos[1] exists
    assert plan.changes == 2 and len(plan.emptied) == 1
    assert sorted(p for r in store.iterate() for p in r.all_paths) == sorted(
        str(p) for p in photos[1:]
    )
