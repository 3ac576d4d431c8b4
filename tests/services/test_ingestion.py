"""The one use case that stores images, against a real Milvus Lite server."""

from __future__ import annotations

import shutil
from pathlib import Path

from PIL import Image

from services.ingestion import MatchPolicy, ProcessLocks, ingest_paths
from testkit.imagegen import make_photo_like
from tests.conftest import StoreFactory

POLICY = MatchPolicy(max_hamming=8, min_cosine=0.95)


def _photos(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(n):
        path = folder / f"p{seed}.jpg"
        make_photo_like(seed, (96, 72)).save(path, quality=90)
        paths.append(path)
    return paths


def test_exact_copies_in_one_batch_keep_every_path(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    originals = _photos(tmp_path / "a", 3)
    copies = [Path(shutil.copy(p, tmp_path / f"copy_{p.name}")) for p in originals]
    mirrored = tmp_path / "mirror.jpg"
    Image.open(originals[0]).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    paths = [str(p) for p in (*originals, *copies, mirrored)]

    outcome = ingest_paths(
        store, None, paths, locks=ProcessLocks(), policy=POLICY, max_pixels=10**8
    )
    assert sorted(outcome.exact) == sorted(str(c) for c in copies)
    assert outcome.near == [str(mirrored)]
    rows = {r.id: r for r in store.iterate()}
    assert len(rows) == 4
    by_path = {p: r for r in rows.values() for p in r.all_paths}
    assert sorted(by_path) == sorted(paths)  # no path lost, each in one row
    for original, copy in zip(originals, copies, strict=True):
        assert by_path[str(original)] is by_path[str(copy)]
    assert by_path[str(mirrored)].dup_of == by_path[str(originals[0])].id


def test_a_repeated_batch_writes_nothing(make_store: StoreFactory, tmp_path: Path) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    paths = [str(p) for p in _photos(tmp_path, 4)]
    first = ingest_paths(store, None, paths, locks=ProcessLocks(), policy=POLICY, max_pixels=10**8)
    before = {r.id: r.ingested_at for r in store.iterate()}
    again = ingest_paths(store, None, paths, locks=ProcessLocks(), policy=POLICY, max_pixels=10**8)
    assert first.written == 4 and again.written == 0  # rows already right are not rewritten
    assert {r.id: r.ingested_at for r in store.iterate()} == before
    tagged = ingest_paths(
        store, None, paths[:1], locks=ProcessLocks(), policy=POLICY, max_pixels=10**8, tags=["x"]
    )
    assert tagged.written == 1 and store.get([tagged.records[0].id])[0].tags == ("x",)


def test_a_letterboxed_copy_arriving_later_is_matched_to_its_original(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_dim=None)
    original = make_photo_like(7, (480, 360))
    bar = 50
    boxed = Image.new("RGB", (480, 360 + 2 * bar))
    boxed.paste(original, (0, bar))
    original.save(tmp_path / "original.jpg", "JPEG", quality=92)
    boxed.save(tmp_path / "boxed.jpg", "JPEG", quality=85)
    # An unrelated photo in the same batch as the copy: it must stay unmatched.
    make_photo_like(8, (480, 360)).save(tmp_path / "other.jpg", "JPEG", quality=92)
    ingest_paths(
        store, None, [tmp_path / "original.jpg"], locks=ProcessLocks(), policy=POLICY,
        max_pixels=10**8,
    )  # fmt: skip
    ingest_paths(
        store, None, [tmp_path / "boxed.jpg", tmp_path / "other.jpg"], locks=ProcessLocks(),
        policy=POLICY, max_pixels=10**8,
    )  # fmt: skip
    rows = {Path(r.path).name: r for r in store.iterate("")}
    assert rows["boxed.jpg"].dup_of == rows["original.jpg"].id
    assert rows["boxed.jpg"].frames is not None and rows["original.jpg"].frames is not None
    assert rows["other.jpg"].dup_of == ""
