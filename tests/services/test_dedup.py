"""Duplicate groups on a real Milvus Lite server, with known answers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from services.dedup import DedupOptions, DuplicateGroup, find_duplicates, resolve
from services.errors import QueryError
from services.keepers import parse_policy
from services.records import ImageRecord
from tests.conftest import StoreFactory

pytestmark = pytest.mark.integration


class MemoryDecisions:
    """The Decisions protocol kept in a dict (the Redis one is tested with the CLI)."""

    def __init__(self) -> None:
        self.pairs: set[tuple[str, str]] = set()
        self.keepers: set[str] = set()
        self.history: dict[str, list[Mapping[str, object]]] = {}

    def pinned_keepers(self) -> set[str]:
        return set(self.keepers)

    def suppressed_pairs(self) -> set[tuple[str, str]]:
        return set(self.pairs)

    def record(
        self, kind: Literal["not_duplicates", "resolved"], keeper: str, members: Sequence[str]
    ) -> None:
        ids = sorted({keeper, *members})
        if kind == "not_duplicates":
            self.pairs |= {(a, b) for a in ids for b in ids if a < b}
        else:
            self.pairs |= {(min(keeper, m), max(keeper, m)) for m in members}

    def reopen(self, keeper: str, members: Sequence[str]) -> None:
        self.pairs -= {(min(keeper, m), max(keeper, m)) for m in members}

    def record_history(self, keeper: str, events: Sequence[Mapping[str, object]]) -> None:
        self.history.setdefault(keeper, []).extend(events)


def code(bits: int) -> bytes:
    return bits.to_bytes(8, "big")


def flip(value: int, *positions: int) -> int:
    for position in positions:
        value ^= 1 << position
    return value


def record(
    name: str,
    phash: int,
    *,
    pixels: tuple[int, int] = (100, 100),
    size: int = 1000,
    fmt: str = "JPEG",
    when: datetime | None = None,
    dihedral: Sequence[int] | None = None,
    paths: Sequence[str] = (),
    clip: Sequence[float] | None = None,
) -> ImageRecord:
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    variants = dihedral or [int(rng.integers(0, 2**63)) for _ in range(7)]
    return ImageRecord(
        id=hashlib.sha256(name.encode()).hexdigest(),
        path=f"/photos/{name}",
        paths=tuple(paths),
        phash=code(phash),
        phash_dihedral=tuple(code(v) for v in variants),
        width=pixels[0],
        height=pixels[1],
        format=fmt,
        bytes=size,
        exif_datetime=when,
        clip=np.asarray(clip if clip else rng.normal(size=4), dtype=np.float32),
    )


def names(group: DuplicateGroup) -> tuple[str, list[str]]:
    return Path(group.keeper.path).name, sorted(Path(m.path).name for m in group.duplicates)


BASE = 0x0123_4567_89AB_CDEF
FAR = 0xFEDC_BA98_7654_3210


def test_exact_duplicates_are_the_paths_of_one_content(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    store.upsert([record("a.jpg", BASE, paths=["/backup/a.jpg", "/masters/a.jpg"])])
    report = find_duplicates(
        store, parse_policy(["path:^/masters/"]), DedupOptions(exact_only=True)
    )
    [group] = report.groups
    assert group.kind == "exact"
    assert group.keeper.path == "/masters/a.jpg"
    assert "path matches" in group.keeper.reason
    assert sorted(m.path for m in group.duplicates) == ["/backup/a.jpg", "/photos/a.jpg"]
    assert all(m.reason == "byte-identical (same sha256)" for m in group.duplicates)


def test_near_groups_are_anchored_on_the_keeper_never_chained(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    a = record("a.jpg", BASE, pixels=(400, 300))
    b = record("b.jpg", flip(BASE, 1, 2), pixels=(200, 150))  # 2 from a
    c = record("c.jpg", flip(BASE, 1, 2, 3, 4), pixels=(100, 75))  # 2 from b, 4 from a
    unrelated = record("z.jpg", FAR)
    store.upsert([a, b, c, unrelated])
    report = find_duplicates(store, parse_policy(["pixels"]), DedupOptions(max_hamming=3))
    # a~b and b~c, but a and c are 4 apart: c never joins a's group through b.
    assert [names(g) for g in report.groups] == [("a.jpg", ["b.jpg"])]
    member = report.groups[0].duplicates[0]
    assert member.hamming == 2 and "pHash distance 2 (as is)" in member.reason
    assert report.stats["pairs"] == 2

    # When b is the keeper, both a and c link to it directly: one group of three.
    store.upsert([replace(b, width=1000, height=1000)])
    report = find_duplicates(store, parse_policy(["pixels"]), DedupOptions(max_hamming=3))
    assert [names(g) for g in report.groups] == [("b.jpg", ["a.jpg", "c.jpg"])]


def test_flipped_and_rotated_copies_match_through_variants(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    original = record("o.jpg", BASE, dihedral=[FAR, 0x1111, 0x2222, 0x3333, 0x4444, 0x5555, 0x6666])
    mirrored = record("m.jpg", flip(FAR, 5))  # 1 bit from the original's mirrored pHash
    rotated = record("r.jpg", 0x2222)  # the original rotated 180 degrees
    store.upsert([original, mirrored, rotated])
    report = find_duplicates(
        store, parse_policy(["pixels", "path:o.jpg"]), DedupOptions(max_hamming=2)
    )
    [group] = report.groups
    assert names(group) == ("o.jpg", ["m.jpg", "r.jpg"])
    reasons = {Path(m.path).name: m.reason for m in group.duplicates}
    assert reasons["m.jpg"].startswith("pHash distance 1 (mirrored)")
    assert reasons["r.jpg"].startswith("pHash distance 0 (rotated 180°)")


@pytest.mark.parametrize(
    ("policy", "keeper", "reason"),
    [
        (["pixels"], "big.png", "largest pixel count (800x600)"),
        (["bytes"], "heavy.jpg", "largest file (9000 bytes)"),
        (["oldest"], "old.jpg", "oldest EXIF date (2001-02-03 04:05)"),
        (["format:TIFF,PNG"], "big.png", "preferred format (PNG)"),
        (["path:heavy"], "heavy.jpg", "path matches 'heavy'"),
    ],
)
def test_keeper_policies(
    make_store: StoreFactory, policy: list[str], keeper: str, reason: str
) -> None:
    store = make_store(clip_dim=4)
    store.upsert(
        [
            record("big.png", BASE, pixels=(800, 600), fmt="PNG", size=5000),
            record(
                "heavy.jpg", flip(BASE, 1), pixels=(640, 480), size=9000, when=datetime(2010, 1, 1)
            ),
            record("old.jpg", flip(BASE, 2), pixels=(320, 240), when=datetime(2001, 2, 3, 4, 5)),
        ]
    )
    [group] = find_duplicates(store, parse_policy(policy), DedupOptions(max_hamming=4)).groups
    assert Path(group.keeper.path).name == keeper
    assert group.keeper.reason == f"kept: {reason}"


def test_bad_keep_policy_is_rejected() -> None:
    with pytest.raises(QueryError, match="unknown keep policy 'largest'"):
        parse_policy(["largest"])
    with pytest.raises(QueryError, match="bad regular expression"):
        parse_policy(["path:("])


def test_decisions_persist(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    store.upsert(
        [
            record("a.jpg", BASE, pixels=(300, 300)),
            record("b.jpg", flip(BASE, 3)),
            record("x.jpg", FAR, pixels=(300, 300)),
            record("y.jpg", flip(FAR, 9)),
        ]
    )
    decisions = MemoryDecisions()
    options = DedupOptions(max_hamming=2)
    first = find_duplicates(store, parse_policy([]), options, decisions)
    assert sorted(names(g) for g in first.groups) == [("a.jpg", ["b.jpg"]), ("x.jpg", ["y.jpg"])]
    ab = next(g for g in first.groups if names(g)[0] == "a.jpg")
    decisions.record("not_duplicates", ab.keeper.id, [m.id for m in ab.duplicates])
    second = find_duplicates(store, parse_policy([]), options, decisions)
    assert [names(g) for g in second.groups] == [("x.jpg", ["y.jpg"])]
    assert second.stats["suppressed_pairs"] == 1


def test_a_keeper_chosen_by_an_analyst_persists(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    store.upsert([record("big.jpg", BASE, pixels=(800, 600)), record("small.jpg", flip(BASE, 1))])
    decisions = MemoryDecisions()
    options = DedupOptions(max_hamming=2)
    [before] = find_duplicates(store, parse_policy([]), options, decisions).groups
    assert names(before) == ("big.jpg", ["small.jpg"])
    decisions.keepers.add("/photos/small.jpg")
    [after] = find_duplicates(store, parse_policy([]), options, decisions).groups
    assert names(after) == ("small.jpg", ["big.jpg"])
    assert after.keeper.reason == "kept: chosen by an analyst"


def test_clip_pairs_catch_what_hashes_miss(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    store.upsert(
        [
            record("photo.jpg", BASE, pixels=(400, 400), clip=[1, 0, 0, 0]),
            record("crop.jpg", FAR, clip=[0.98, 0.2, 0, 0]),  # different hash, same content
            record("other.jpg", 0x0F0F_0F0F_0F0F_0F0F, clip=[0, 1, 0, 0]),
        ]
    )
    hashes_only = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=6))
    assert hashes_only.groups == []
    with_clip = find_duplicates(
        store, parse_policy([]), DedupOptions(max_hamming=6, min_cosine=0.95)
    )
    [group] = with_clip.groups
    assert names(group) == ("photo.jpg", ["crop.jpg"])
    assert group.duplicates[0].cosine == pytest.approx(0.98 / np.hypot(0.98, 0.2), abs=1e-5)
    assert group.duplicates[0].hamming is None


def test_filter_limits_the_collection(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    store.upsert([record("a.jpg", BASE, fmt="PNG"), record("b.jpg", flip(BASE, 1))])
    report = find_duplicates(store, parse_policy([]), DedupOptions(where='format == "PNG"'))
    assert report.groups == [] and report.stats["rows"] == 1


def test_move_to_quarantine_updates_rows_and_never_overwrites(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    (library / "2020").mkdir(parents=True)
    (library / "2021").mkdir()
    files = {}
    for name in ("2020/keep.jpg", "2020/copy.jpg", "2021/other.jpg", "2021/taken.jpg"):
        (library / name).write_bytes(name.encode())
        files[name] = str(library / name)
    quarantine = tmp_path / "quarantine"
    (quarantine / "2021").mkdir(parents=True)
    (quarantine / "2021" / "taken.jpg").write_bytes(b"already here")
    store = make_store(clip_dim=4)
    keep = replace(record("keep", BASE, pixels=(900, 900)), path=files["2020/keep.jpg"])
    copy = replace(record("copy", flip(BASE, 1)), path=files["2020/copy.jpg"])
    other = replace(record("other", flip(BASE, 2)), path=files["2021/other.jpg"])
    taken = replace(record("taken", flip(BASE, 3)), path=files["2021/taken.jpg"])
    store.upsert([keep, copy, other, taken])
    decisions = MemoryDecisions()
    report = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    actions = resolve(
        store, report.groups, move_to=quarantine, delete_files=False, decisions=decisions
    ).actions

    by_path = {Path(a.path).relative_to(library).as_posix(): a for a in actions}
    assert set(by_path) == {"2020/copy.jpg", "2021/other.jpg", "2021/taken.jpg"}
    assert by_path["2020/copy.jpg"].target == str(quarantine / "2020" / "copy.jpg")
    assert (quarantine / "2021" / "other.jpg").read_bytes() == b"2021/other.jpg"
    assert by_path["2021/taken.jpg"].error and "not overwritten" in by_path["2021/taken.jpg"].error
    assert (quarantine / "2021" / "taken.jpg").read_bytes() == b"already here"
    assert (library / "2021" / "taken.jpg").exists() and (library / "2020" / "keep.jpg").exists()
    # Moved contents leave the collection; the one not moved stays, and so does the keeper.
    assert {r.id for r in store.iterate()} == {keep.id, taken.id}
    again = find_duplicates(store, parse_policy([]), DedupOptions(max_hamming=4), decisions)
    assert [names(g) for g in again.groups] == [("keep.jpg", ["taken.jpg"])]


def test_a_raw_and_its_jpeg_are_one_shot_not_duplicates(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=4)
    shot = datetime(2023, 7, 1, 12, 30, 5)
    store.upsert(
        [
            # One shot: the camera wrote a RAW and a JPEG, same base name, same EXIF time.
            record("IMG_0001.CR2", BASE, pixels=(6000, 4000), fmt="CR2", when=shot),
            record("img_0001.jpg", flip(BASE, 1), pixels=(6000, 4000), when=shot),
            # Same base name but another moment: not one shot, still a pair.
            record("DSC_0002.NEF", FAR, fmt="NEF", when=datetime(2023, 7, 1, 12, 31)),
            record("DSC_0002.JPG", flip(FAR, 2), pixels=(50, 50), when=shot),
            # A JPEG and its resized copy stay duplicates.
            record("beach.jpg", 0x0F0F_0F0F_0F0F_0F0F, pixels=(800, 600), when=shot),
            record("beach_small.jpg", flip(0x0F0F_0F0F_0F0F_0F0F, 3), pixels=(400, 300)),
        ]
    )
    for options in (DedupOptions(max_hamming=3), DedupOptions(max_hamming=3, min_cosine=0.9999)):
        report = find_duplicates(store, parse_policy([]), options)
        assert sorted(names(g) for g in report.groups) == [
            ("DSC_0002.NEF", ["DSC_0002.JPG"]),
            ("beach.jpg", ["beach_small.jpg"]),
        ]
        assert report.stats["raw_jpeg_pairs"] == 1 and report.stats["pairs"] == 2


def test_move_never_escapes_the_quarantine(make_store: StoreFactory, tmp_path: Path) -> None:
    from services import fileops

    library, outside = tmp_path / "library", tmp_path / "outside"
    (library / "a").mkdir(parents=True)
    outside.mkdir()
    (library / "a" / "x.jpg").write_bytes(b"x")
    (library / "b.jpg").write_bytes(b"b")
    quarantine = tmp_path / "quarantine"
    quarantine.mkdir()
    (quarantine / "a").symlink_to(outside, target_is_directory=True)
    actions = fileops.move_into(
        [str(library / "a" / "x.jpg"), str(library / "b.jpg"), f"{library}/a/../b.jpg", "rel.jpg"],
        quarantine,
    )
    errors = [a.error or "" for a in actions]
    assert "symbolic link inside the quarantine folder" in errors[0]
    assert actions[1].target == str(quarantine / "b.jpg")
    assert "not an absolute, normalised path" in errors[2] and "not an absolute" in errors[3]
    assert list(outside.iterdir()) == [] and (library / "a" / "x.jpg").exists()
    linked = tmp_path / "linked-quarantine"
    linked.symlink_to(outside, target_is_directory=True)
    [refused] = fileops.move_into([str(library / "a" / "x.jpg")], linked)
    assert refused.error and "symbolic link" in refused.error


CAMERA = {"camera_make": "Canon", "camera_model": "EOS R5"}


def test_burst_shots_are_their_own_groups_and_never_moved(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_dim=4)
    shot = datetime(2024, 5, 4, 10, 0, 0)
    later = datetime(2024, 5, 4, 10, 0, 3)
    rows = [
        # One camera, 3 s apart, 4 bits apart: two shots of a burst, not copies.
        replace(record("burst1.jpg", BASE, when=shot, pixels=(400, 300)), **CAMERA),
        replace(record("burst2.jpg", flip(BASE, 1, 2, 3, 4), when=later), **CAMERA),
        # One camera, a minute apart: copies as before.
        replace(record("walk1.jpg", FAR, when=shot, pixels=(400, 300)), **CAMERA),
        replace(
            record("walk2.jpg", flip(FAR, 5, 6, 7, 8), when=datetime(2024, 5, 4, 10, 1)), **CAMERA
        ),
        # One camera, 2 s apart, 2 bits apart: the same frame saved twice stays a duplicate.
        replace(record("same1.jpg", 0x0F0F_0F0F_0F0F_0F0F, when=shot, pixels=(400, 300)), **CAMERA),
        replace(record("same2.jpg", flip(0x0F0F_0F0F_0F0F_0F0F, 1, 2), when=later), **CAMERA),
    ]
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = [replace(r, path=str(folder / Path(r.path).name)) for r in rows]
    for row in rows:
        Path(row.path).write_bytes(row.id.encode())
    store.upsert(rows)
    report = find_duplicates(store, parse_policy(["pixels"]), DedupOptions(max_hamming=4))
    kinds = sorted((g.kind, *names(g)[:1], *names(g)[1]) for g in report.groups)
    assert kinds == [
        ("burst", "burst1.jpg", "burst2.jpg"),
        ("near", "same1.jpg", "same2.jpg"),
        ("near", "walk1.jpg", "walk2.jpg"),
    ]
    [burst] = [g for g in report.groups if g.kind == "burst"]
    assert burst.duplicates[0].reason.startswith("burst: shot 3 s from the keeper on Canon EOS R5")
    assert report.stats["burst_groups"] == 1
    resolution = resolve(
        store, report.groups, move_to=tmp_path / "quarantine", delete_files=False, decisions=None
    )
    moved = sorted(Path(a.path).name for a in resolution.actions if a.done)
    assert moved == ["same2.jpg", "walk2.jpg"]
    assert (folder / "burst1.jpg").exists() and (folder / "burst2.jpg").exists()


def test_a_crop_pairs_with_its_original_through_the_frame_codes(make_store: StoreFactory) -> None:
    from services.frames import WHOLE, FrameCodes

    store = make_store(clip_dim=4)
    window80 = 0x5A5A_3C3C_0FF0_9669
    original = replace(
        record("original.jpg", BASE, pixels=(800, 600)),
        frames=FrameCodes(WHOLE, code(BASE), (code(FAR), code(window80), code(~FAR & (2**64 - 1)))),
    )
    crop_code = flip(window80, 1, 2)
    crop = replace(
        record("crop.jpg", crop_code, pixels=(640, 480)),
        frames=FrameCodes(WHOLE, code(crop_code), (code(1), code(2), code(3))),
    )
    store.upsert([original, crop, record("other.jpg", 0x0F0F_0F0F_0F0F_0F0F)])
    report = find_duplicates(store, parse_policy(["pixels"]), DedupOptions(max_hamming=8))
    [group] = report.groups
    assert names(group) == ("original.jpg", ["crop.jpg"])
    assert group.duplicates[0].hamming == 2
    assert "content region against 80% window" in group.duplicates[0].reason
    # The same pair through the CLIP path (records, not the hash scan).
    report = find_duplicates(
        store, parse_policy(["pixels"]), DedupOptions(max_hamming=8, min_cosine=0.9999)
    )
    assert [names(g) for g in report.groups] == [("original.jpg", ["crop.jpg"])]


@pytest.mark.parametrize("model", ["hash-only", "tiny-clip"])
def test_an_off_centre_crop_pairs_with_its_original_through_its_patches(
    make_store: StoreFactory, tmp_path: Path, tiny_clip_dir: Path, model: str
) -> None:
    """Ingested as ingestion ingests files, hash-only or with a (tiny, saved) CLIP model as users
    run it: a crop of a fifth of each side, nearly all off one corner, then halved and
    recompressed, meets no whole-frame or frame code of its original (every window is centred),
    but its patches agree with the original's. With CLIP the dedup takes its other path (one
    scan with the vectors, cosine pairs beside the hashes'), asked for cosines no pair reaches."""
    from services.embed import ClipEmbedder
    from services.pipeline import analyze_batch
    from testkit.imagegen import off_centre_cut, sample_photos

    photos = sample_photos(("coffee", "chelsea"))
    coffee = photos["coffee"].convert("RGB")
    coffee.save(tmp_path / "coffee.png")
    off_centre_cut(coffee).save(tmp_path / "cut.jpg", quality=75)
    photos["chelsea"].convert("RGB").save(tmp_path / "cat.png")
    paths = [str(tmp_path / name) for name in ("coffee.png", "cut.jpg", "cat.png")]
    embedder = None
    store = make_store(clip_model=None, clip_dim=None)
    options = DedupOptions(max_hamming=8)
    if model == "tiny-clip":
        embedder = ClipEmbedder.load(str(tiny_clip_dir), device="cpu", precision="fp32")
        store = make_store(clip_model="tiny-clip", clip_dim=embedder.dim)
        options = DedupOptions(max_hamming=8, min_cosine=1.01)
    outcome = analyze_batch(paths, embedder, max_pixels=10**8)
    store.upsert(outcome.records)
    report = find_duplicates(store, parse_policy(["pixels"]), options)
    [group] = report.groups
    assert names(group) == ("coffee.png", ["cut.jpg"])
    [member] = group.duplicates
    assert member.hamming is None  # no 64-bit code of the frame found it
    assert "patches agree" in member.reason
    # Stored without patch codes (a row not yet migrated), the pair is not found.
    store.upsert([replace(r, patches=None) for r in outcome.records])
    assert find_duplicates(store, parse_policy(["pixels"]), options).groups == []
