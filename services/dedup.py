"""Duplicate groups over a whole collection (or its filtered part).

- **exact**: byte-identical files, i.e. the several paths of one stored content (same sha256);
- **near**: pairs within the pHash Hamming radius, over the 8 flips and rotations, found for all
  rows at once by an index built for it (:mod:`services.hamming_pairs`), plus, when CLIP vectors
  exist, pairs above a cosine threshold (crops and edits that hashes miss).

Pairs become candidate groups by union-find; each group is then **anchored on its keeper**: a
member stays only if it is itself a pair with the keeper, so a chain a~b~c never puts a next to
an unrelated c. Members left out form groups of their own the same way. Decisions (a group
marked "not duplicates", or resolved) suppress their pairs in later runs. A RAW and a JPEG of one
shot (same base name, same EXIF time) are one shot, never a pair.

Resolving a group loses nothing: the keeper's row gains what its duplicates carried
(:mod:`services.merge`), each keeper's history of merged paths is recorded with the decisions,
and a move writes a manifest into the quarantine folder that ``lookalike undo`` restores from
(:mod:`services.manifest`, :mod:`services.undo`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePath
from typing import Literal, Protocol

import numpy as np

from services import fileops, objectops
from services.bursts import burst_gap, describe_burst, same_frame
from services.clip_join import clip_join, normalise_in_place, normalised
from services.discovery import RAW_SUFFIXES
from services.errors import ConfigError
from services.fileops import FileAction
from services.frame_pairs import FramePairs, describe_rule, frame_pairs
from services.frames import FRAME_CODES, RULES
from services.hamming_pairs import PairSet, codes_from_bytes, pairs_within
from services.keepers import Candidate, Criterion, choose_keeper, pinned
from services.manifest import ManifestEntry, write_manifest
from services.merge import Gain, absorb
from services.patch_pairs import PatchPairs, pairs_of_codes, patch_pairs
from services.patches import patch_radius
from services.records import ImageRecord, clip_cosine
from services.settings import setting_default
from services.sources import scheme_of
from services.store import HashScan, VectorStore

log = logging.getLogger(__name__)

GroupKind = Literal["exact", "near", "burst"]
Progress = Callable[[float, str], None]  # (fraction done, what runs now)
VARIANT_NAMES = (
    "as is",
    "mirrored",
    "rotated 90°",
    "rotated 180°",
    "rotated 270°",
    "mirrored, rotated 90°",
    "mirrored, rotated 180°",
    "mirrored, rotated 270°",
)


class Decisions(Protocol):
    """Where analysts' verdicts persist (Redis in lookalike's deployments)."""

    def suppressed_pairs(self) -> set[tuple[str, str]]: ...
    def record(
        self, kind: Literal["not_duplicates", "resolved"], keeper: str, members: Sequence[str]
    ) -> None: ...
    def pinned_keepers(self) -> set[str]: ...
    def reopen(self, keeper: str, members: Sequence[str]) -> None:
        """Take back "resolved" for the pairs of ``keeper`` and ``members`` (an undo)."""
        ...

    def record_history(self, keeper: str, events: Sequence[Mapping[str, object]]) -> None:
        """Append to ``keeper``'s history: which contents and paths merged into it, and where
        they went (or came back from)."""
        ...


@dataclass(frozen=True)
class Link:
    """Why two contents are near-duplicates."""

    hamming: int | None = None
    variant: int = 0
    cosine: float | None = None
    frame: str = ""  # the frame rule that matched (services.frame_pairs); "" for whole frames
    patches: int = 0  # patches that agree on one placement (services.patch_pairs); 0 for none

    def merged(self, other: Link) -> Link:
        """The stronger evidence of both: the smaller distance, the larger cosine, the more
        patches."""
        closer = (
            other
            if other.hamming is not None and (self.hamming is None or other.hamming < self.hamming)
            else self
        )
        cosines = [c for c in (self.cosine, other.cosine) if c is not None]
        return Link(
            closer.hamming,
            closer.variant,
            max(cosines) if cosines else None,
            closer.frame,
            max(self.patches, other.patches),
        )

    def with_cosine(self, cosine: float | None) -> Link:
        return replace(self, cosine=cosine)

    def describe(self) -> str:
        parts = []
        if self.hamming is not None and self.frame:
            parts.append(f"pHash distance {self.hamming} ({self.frame})")
        elif self.hamming is not None:
            parts.append(f"pHash distance {self.hamming} ({VARIANT_NAMES[self.variant]})")
        elif self.patches:
            parts.append(f"{self.patches} patches agree (a crop, a border or an overlay)")
        if self.cosine is not None:
            parts.append(f"CLIP cosine {self.cosine:.3f}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Member:
    id: str
    path: str
    hamming: int | None
    cosine: float | None
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path,
            "id": self.id,
            "hamming": self.hamming,
            "cosine": None if self.cosine is None else round(self.cosine, 6),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class DuplicateGroup:
    kind: GroupKind
    keeper: Member
    duplicates: list[Member]

    @property
    def members(self) -> list[Member]:
        return [self.keeper, *self.duplicates]

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "keep": self.keeper.path,
            "duplicates": [m.path for m in self.duplicates],
            "members": [m.to_dict() for m in self.members],
        }


@dataclass(frozen=True)
class DedupReport:
    groups: list[DuplicateGroup]
    stats: dict[str, float | int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {"groups": [g.to_dict() for g in self.groups], "stats": self.stats}


@dataclass(frozen=True)
class DedupOptions:
    max_hamming: int = setting_default("dedup_max_hamming")
    min_cosine: float | None = None  # None: no CLIP pairs
    exact_only: bool = False
    where: str = ""


def find_duplicates(
    store: VectorStore,
    policy: Sequence[Criterion],
    options: DedupOptions,
    decisions: Decisions | None = None,
    progress: Progress | None = None,
) -> DedupReport:
    """Every duplicate group in the (filtered) collection, largest first. ``progress`` hears of
    each stage as it starts (and of the hash scan batch by batch), as a fraction of the whole."""
    report = progress or _silent
    report(0.0, "reading rows stored under several paths")
    with_clip = options.min_cosine is not None and store.has_clip and not options.exact_only
    # One light scan of the collection (no paths arrays: slow in bulk); the few rows stored
    # under several paths are read whole for the exact groups.
    several = f"path_count > 1 and ({options.where})" if options.where else "path_count > 1"
    pins = decisions.pinned_keepers() if decisions else set()
    policy = [pinned(pins), *policy] if pins else policy
    groups = exact_groups(list(store.iterate(several)), policy)
    suppressed = decisions.suppressed_pairs() if decisions else set()
    records: list[ImageRecord] = []
    links: dict[tuple[int, int], Link] = {}
    shots: set[tuple[int, int]] = set()
    scanned = cached = 0
    if not options.exact_only:
        if with_clip and options.min_cosine is not None:
            report(_SCAN_START, "reading hashes and CLIP vectors, pairing")
            records, links, scanned, cached = _clip_links_from_scan(
                store, options, options.min_cosine
            )
        else:
            records, links, scanned = _hash_links_from_scan(store, options, report)
        report(_GROUPS_START, "grouping pairs, choosing keepers")
        links = {
            pair: link
            for pair, link in links.items()
            if _key(records[pair[0]].id, records[pair[1]].id) not in suppressed
        }
        shots = {pair for pair in links if is_raw_jpeg_pair(records[pair[0]], records[pair[1]])}
        links = {pair: link for pair, link in links.items() if pair not in shots}
        bursts = {
            pair: link
            for pair, link in links.items()
            if burst_gap(records[pair[0]], records[pair[1]]) is not None
            and not same_frame(link.hamming, link.cosine)
        }
        links = {pair: link for pair, link in links.items() if pair not in bursts}
        groups += near_groups(records, links, policy)
        groups += [_as_burst(group, records) for group in near_groups(records, bursts, policy)]
    groups.sort(key=lambda g: (-len(g.members), g.kind, g.keeper.path))
    report(1.0, f"{len(groups)} groups")
    stats: dict[str, float | int] = {
        "rows": scanned,
        "vectors_from_cache": cached,
        "pairs": len(links),
        "groups": len(groups),
        "exact_groups": sum(1 for g in groups if g.kind == "exact"),
        "near_groups": sum(1 for g in groups if g.kind == "near"),
        "duplicates": sum(len(g.duplicates) for g in groups),
        "suppressed_pairs": len(suppressed),
        "raw_jpeg_pairs": len(shots),
        "burst_groups": sum(1 for g in groups if g.kind == "burst"),
    }
    return DedupReport(groups, stats)


def _as_burst(group: DuplicateGroup, records: Sequence[ImageRecord]) -> DuplicateGroup:
    """A near group of burst pairs, relabelled: its members are shots, each kept."""
    by_id = {r.id: r for r in records}
    keeper = by_id[group.keeper.id]
    members = [
        replace(m, reason=f"{describe_burst(keeper, by_id[m.id])}; {m.reason}")
        for m in group.duplicates
    ]
    return DuplicateGroup("burst", group.keeper, members)


def is_raw_jpeg_pair(a: ImageRecord, b: ImageRecord) -> bool:
    """A RAW file and the camera's JPEG (or HEIC) of the same shot: the same base name (case
    aside, any folder), one of them RAW, and the same EXIF time. One shot, not a duplicate."""
    left, right = PurePath(a.path), PurePath(b.path)
    return (
        left.stem.lower() == right.stem.lower()
        and (left.suffix.lower() in RAW_SUFFIXES) != (right.suffix.lower() in RAW_SUFFIXES)
        and a.exif_datetime is not None
        and a.exif_datetime == b.exif_datetime
    )


# Where each stage starts, as a fraction of a whole run (a hash-only run of a million rows on
# Milvus Lite: the scan is about half, the pairing a quarter).
_SCAN_START, _PAIRS_START, _GROUPS_START = 0.05, 0.55, 0.8


def _silent(done: float, stage: str) -> None:
    """No progress reported."""


def _hash_links_from_scan(
    store: VectorStore, options: DedupOptions, report: Progress = _silent
) -> tuple[list[ImageRecord], dict[tuple[int, int], Link], int]:
    """pHash pairs from one scan of ids, hashes and keeper fields (as columns); records are made
    only for the rows in pairs: the whole collection never travels as records, and no row is
    read twice."""
    total = store.count(options.where)
    report(_SCAN_START, f"reading the hashes of {total:,} rows")

    def scanned(rows: int) -> None:
        share = min(1.0, rows / total) if total else 1.0
        report(
            _SCAN_START + share * (_PAIRS_START - _SCAN_START),
            f"reading the hashes: {rows:,} of {total:,} rows",
        )

    scan = store.scan_hashes(options.where, keepers=True, progress=scanned)
    report(_PAIRS_START, f"pairing {len(scan.ids):,} hashes within radius {options.max_hamming}")
    found = pairs_within(scan.codes, options.max_hamming, variants=scan.variants)
    framed = (
        None if scan.frames is None else frame_pairs(scan.codes, scan.frames, options.max_hamming)
    )
    patched = _patch_pairs(scan, options.max_hamming)
    involved_rows = set(found.left.tolist()) | set(found.right.tolist())
    if framed is not None:
        involved_rows |= set(framed.left.tolist()) | set(framed.right.tolist())
    if patched is not None:
        involved_rows |= set(patched.left.tolist()) | set(patched.right.tolist())
    involved = sorted(involved_rows)
    position = {row: index for index, row in enumerate(involved)}
    columns = scan.keepers
    assert columns is not None
    codes = scan.codes.tolist()
    records = [columns.record(row, scan.ids[row], codes[row]) for row in involved]
    links = _pair_links(found, position)
    if framed is not None:
        _add_frame_links(links, framed, position)
    if patched is not None:
        _add_patch_links(links, patched, position)
    return records, links, len(scan.ids)


def _patch_pairs(scan: HashScan, max_hamming: int) -> PatchPairs | None:
    """The pairs of scanned rows whose patches agree (None when the scan read none)."""
    if scan.patches is None:
        return None
    return patch_pairs(scan.patches, patch_radius(max_hamming))


def _add_patch_links(
    links: dict[tuple[int, int], Link],
    patched: PatchPairs,
    position: Mapping[int, int] | None = None,
) -> None:
    """Merge the patch pairs into ``links``."""
    for left, right, shared in zip(
        patched.left.tolist(), patched.right.tolist(), patched.shared.tolist(), strict=True
    ):
        key = (left, right) if position is None else (position[left], position[right])
        link = Link(patches=int(shared))
        links[key] = links[key].merged(link) if key in links else link


def _add_frame_links(
    links: dict[tuple[int, int], Link],
    framed: FramePairs,
    position: Mapping[int, int] | None = None,
) -> None:
    """Merge the frame-rule pairs into ``links`` (the closer evidence wins)."""
    labels = [describe_rule(rule) for rule in RULES]
    for left, right, distance, rule in zip(
        framed.left.tolist(),
        framed.right.tolist(),
        framed.distance.tolist(),
        framed.rule.tolist(),
        strict=True,
    ):
        key = (left, right) if position is None else (position[left], position[right])
        link = Link(int(distance), 0, None, labels[rule])
        links[key] = links[key].merged(link) if key in links else link


def _clip_links_from_scan(
    store: VectorStore, options: DedupOptions, min_cosine: float
) -> tuple[list[ImageRecord], dict[tuple[int, int], Link], int, int]:
    """pHash and CLIP pairs from one bulk read of hashes, keeper fields and vectors (a float32
    matrix, normalised in place: one copy of the vectors in memory); records only for the rows
    in pairs, as :func:`_hash_links_from_scan`. Also returns how many rows' vectors came from
    the store's vector cache."""
    scan = store.scan_hashes(options.where, keepers=True, vectors=True)
    columns, vectors = scan.keepers, scan.clip
    assert columns is not None and vectors is not None
    normalise_in_place(vectors)
    links = _pair_links(pairs_within(scan.codes, options.max_hamming, variants=scan.variants))
    if scan.frames is not None:
        _add_frame_links(links, frame_pairs(scan.codes, scan.frames, options.max_hamming))
    patched = _patch_pairs(scan, options.max_hamming)
    if patched is not None:
        _add_patch_links(links, patched)
    for pair, cosine in clip_join(vectors, min_cosine):
        links[pair] = links.get(pair, Link()).merged(Link(cosine=cosine))
    for (left, right), link in list(links.items()):
        if link.cosine is None:
            cosine = float(vectors[left] @ vectors[right])
            links[(left, right)] = link.with_cosine(cosine)
    involved = sorted({row for pair in links for row in pair})
    position = {row: index for index, row in enumerate(involved)}
    codes = scan.codes
    records = [columns.record(row, scan.ids[row], int(codes[row])) for row in involved]
    renumbered = {(position[left], position[right]): link for (left, right), link in links.items()}
    return records, renumbered, len(scan.ids), scan.cached


def _pair_links(
    found: PairSet, position: Mapping[int, int] | None = None
) -> dict[tuple[int, int], Link]:
    """Links keyed by row pairs (renumbered through ``position`` when given)."""
    links = {}
    for left, right, distance, variant in zip(
        found.left.tolist(),
        found.right.tolist(),
        found.distance.tolist(),
        found.variant.tolist(),
        strict=True,
    ):
        key = (left, right) if position is None else (position[left], position[right])
        links[key] = Link(int(distance), int(variant))
    return links


def exact_groups(
    records: Sequence[ImageRecord], policy: Sequence[Criterion]
) -> list[DuplicateGroup]:
    """One group per content stored under several paths."""
    groups = []
    for record in records:
        paths = record.all_paths
        if len(paths) < 2:
            continue
        candidates = [_candidate(record, path) for path in paths]
        best, reason = choose_keeper(candidates, policy)
        keeper = Member(record.id, paths[best], 0, 1.0, f"kept: {reason}")
        duplicates = [
            Member(record.id, path, 0, 1.0, "byte-identical (same sha256)")
            for i, path in enumerate(paths)
            if i != best
        ]
        groups.append(DuplicateGroup("exact", keeper, duplicates))
    return groups


def near_links(
    records: Sequence[ImageRecord], max_hamming: int, min_cosine: float | None
) -> dict[tuple[int, int], Link]:
    """Near-duplicate pairs (row indices, smaller first) with what links them."""
    links: dict[tuple[int, int], Link] = {}
    if len(records) < 2:
        return links
    codes = codes_from_bytes([r.phash for r in records])
    variants = None
    if all(len(r.phash_dihedral) == 7 for r in records):
        variants = np.stack([codes_from_bytes(list(r.phash_dihedral)) for r in records])
    links = _pair_links(pairs_within(codes, max_hamming, variants=variants))
    frames = np.array(
        [
            [int.from_bytes(c, "big") for c in (r.frames.content, *r.frames.windows)]
            if r.frames is not None
            else [int(code)] * FRAME_CODES
            for r, code in zip(records, codes.tolist(), strict=True)
        ],
        dtype=np.uint64,
    ).reshape(-1, FRAME_CODES)
    _add_frame_links(links, frame_pairs(codes, frames, max_hamming))
    _add_patch_links(links, pairs_of_codes([r.patches for r in records], max_hamming))
    if min_cosine is not None:
        for pair, cosine in clip_pairs(records, min_cosine):
            links[pair] = links.get(pair, Link()).merged(Link(cosine=cosine))
    for pair, link in list(links.items()):
        if (link.hamming is not None or link.patches) and link.cosine is None:
            links[pair] = link.with_cosine(_cosine(records, pair))
    return links


def clip_pairs(
    records: Sequence[ImageRecord], min_cosine: float
) -> Iterable[tuple[tuple[int, int], float]]:
    """Pairs with cosine >= ``min_cosine`` (none unless every record has a CLIP vector): exact
    for small collections, an approximate join above (services.clip_join)."""
    if len(records) < 2 or any(r.clip is None for r in records):
        return iter(())
    return clip_join(
        normalised(np.stack([r.clip for r in records if r.clip is not None])), min_cosine
    )


def near_groups(
    records: Sequence[ImageRecord], links: dict[tuple[int, int], Link], policy: Sequence[Criterion]
) -> list[DuplicateGroup]:
    """Union-find components of ``links``, each split into keeper-anchored groups."""
    parent = list(range(len(records)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for left, right in links:
        parent[find(left)] = find(right)
    components: dict[int, list[int]] = {}
    for left, right in links:
        for i in (left, right):
            components.setdefault(find(i), [])
    for i in range(len(records)):
        root = find(i)
        if root in components:
            components[root].append(i)
    groups: list[DuplicateGroup] = []
    for members in components.values():
        groups += _anchored(records, sorted(members), links, policy)
    return groups


def _anchored(
    records: Sequence[ImageRecord],
    members: list[int],
    links: dict[tuple[int, int], Link],
    policy: Sequence[Criterion],
) -> list[DuplicateGroup]:
    """Pick the keeper; keep the members linked to it directly; repeat on the rest."""
    groups = []
    remaining = list(members)
    while len(remaining) > 1:
        candidates = [_candidate(records[i], records[i].path) for i in remaining]
        best, reason = choose_keeper(candidates, policy)
        keeper_index = remaining[best]
        linked = [
            (i, links[_pair(keeper_index, i)])
            for i in remaining
            if i != keeper_index and _pair(keeper_index, i) in links
        ]
        if linked:
            keeper = records[keeper_index]
            groups.append(
                DuplicateGroup(
                    "near",
                    Member(keeper.id, keeper.path, 0, 1.0, f"kept: {reason}"),
                    [
                        Member(
                            records[i].id,
                            records[i].path,
                            link.hamming,
                            link.cosine,
                            link.describe(),
                        )
                        for i, link in linked
                    ],
                )
            )
        taken = {keeper_index, *(i for i, _ in linked)}
        remaining = [i for i in remaining if i not in taken]
    return groups


def _candidate(record: ImageRecord, path: str) -> Candidate:
    return Candidate(
        record.id,
        path,
        record.width,
        record.height,
        record.bytes,
        record.format,
        record.exif_datetime,
    )


def _pair(a: int, b: int) -> tuple[int, int]:
    return (a, b) if a < b else (b, a)


def _key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a < b else (b, a)


def _cosine(records: Sequence[ImageRecord], pair: tuple[int, int]) -> float | None:
    return clip_cosine(records[pair[0]], records[pair[1]])


@dataclass(frozen=True)
class Resolution:
    """What resolving did: one action per file, and the manifest of a move (None otherwise)."""

    actions: list[FileAction]
    manifest: Path | str | None = None  # str: an s3:// object

    @property
    def failed(self) -> list[FileAction]:
        return [a for a in self.actions if not a.done]


def resolve(
    store: VectorStore,
    groups: Sequence[DuplicateGroup],
    *,
    move_to: Path | str | None,
    delete_files: bool,
    decisions: Decisions | None,
) -> Resolution:
    """Move (or delete) every group's duplicates, update the rows, record the groups resolved.

    Keeper files are never touched; the keeper's row gains what the duplicates that went carried
    (:func:`services.merge.absorb`). A row loses the paths that went away; a row with none left
    is deleted. A move first writes its manifest into ``move_to``, then changes the collection.

    ``move_to`` is a folder (local files are moved) or an ``s3://BUCKET/PREFIX`` (objects are
    moved); the other kind, and ``https://`` rows always, are reported "not changed" with why,
    so a mixed group takes one run per kind. A delete removes files and objects alike.
    """
    groups = [g for g in groups if g.kind != "burst"]  # shots of a burst are never moved
    paths = list(
        dict.fromkeys(m.path for g in groups for m in g.duplicates if m.path != g.keeper.path)
    )
    target = _quarantine_location(move_to)
    if target is None and not delete_files:
        return Resolution([])
    actions = _act(paths, target)
    done = {a.path: a for a in actions if a.done}
    gone = _gone_members(groups, set(done))
    ids = sorted({g.keeper.id for g, _ in gone} | {m.id for _, m in gone})
    before = {r.id: r for r in store.get(ids, with_vectors=True)}
    rows, gains = _absorbed(groups, gone, before)
    manifest = None
    if target is not None and gone:
        entries = [
            ManifestEntry(
                original=member.path,
                quarantine=str(done[member.path].target),
                id=member.id,
                keeper_id=group.keeper.id,
                keeper_path=group.keeper.path,
                kind=group.kind,
                row=before[member.id],
                gained=gains.get((group.keeper.id, member.id), Gain()),
            )
            for group, member in gone
            if member.id in before
        ]
        # The manifest is stored before the collection changes: it holds the rows to restore.
        manifest = write_manifest(target, store.collection, store.instance, entries)
    _write_rows(store, before, rows, set(done))
    if decisions is not None:
        _record(decisions, groups, gone, done, gains, manifest)
    return Resolution(actions, manifest)


def _quarantine_location(move_to: Path | str | None) -> Path | str | None:
    """A local folder as an absolute Path (as fileops names it), an s3:// prefix as a str."""
    if move_to is None:
        return None
    if isinstance(move_to, str) and scheme_of(move_to) == "s3":
        return move_to.rstrip("/")
    if isinstance(move_to, str) and scheme_of(move_to) == "https":
        raise ConfigError(f"cannot quarantine to {move_to}: use a folder or s3://BUCKET/PREFIX")
    return Path(os.path.abspath(move_to))  # noqa: PTH100 - normalise, do not resolve links


def _act(paths: Sequence[str], target: Path | str | None) -> list[FileAction]:
    """Move each path under ``target`` (delete when None), each kind by its own module; one
    action per path, in order."""
    by_kind: dict[str, list[str]] = {"file": [], "s3": []}
    refused: dict[str, FileAction] = {}
    for path in paths:
        scheme = scheme_of(path)
        why = _not_movable(scheme, target)
        if why is None:
            by_kind[scheme].append(path)
        else:
            refused[path] = FileAction(path, error=why)
    if target is None:
        taken = [*fileops.delete(by_kind["file"]), *objectops.delete(by_kind["s3"])]
    elif isinstance(target, str):
        taken = objectops.move_into(by_kind["s3"], target)
    else:
        taken = fileops.move_into(by_kind["file"], target)
    actions = {a.path: a for a in taken} | refused
    return [actions[p] for p in paths]


def _not_movable(scheme: str, target: Path | str | None) -> str | None:
    if scheme == "https":
        return "a web URL cannot be moved or deleted by lookalike; not changed"
    if isinstance(target, str) and scheme == "file":
        return "a local file: quarantine it with a local --move-to folder; not changed"
    if isinstance(target, Path) and scheme == "s3":
        return "an s3:// object: quarantine it with --move-to s3://BUCKET/PREFIX; not changed"
    return None


def _gone_members(
    groups: Sequence[DuplicateGroup], gone: set[str]
) -> list[tuple[DuplicateGroup, Member]]:
    """(group, duplicate) for every duplicate whose file went, each path once."""
    seen: set[str] = set()
    found = []
    for group in groups:
        for member in group.duplicates:
            if member.path in gone and member.path != group.keeper.path and member.path not in seen:
                seen.add(member.path)
                found.append((group, member))
    return found


def _absorbed(
    groups: Sequence[DuplicateGroup],
    gone: Sequence[tuple[DuplicateGroup, Member]],
    before: Mapping[str, ImageRecord],
) -> tuple[dict[str, ImageRecord], dict[tuple[str, str], Gain]]:
    """The rows with each keeper's gains applied, and the gains by (keeper id, duplicate id)."""
    rows = dict(before)
    gains: dict[tuple[str, str], Gain] = {}
    for group in groups:
        keeper = rows.get(group.keeper.id)
        taken = [
            before[m.id]
            for g, m in gone
            if g is group and m.id != group.keeper.id and m.id in before
        ]
        if keeper is None or not taken:
            continue
        rows[keeper.id], by_id = absorb(keeper, taken)
        gains.update({(keeper.id, i): gain for i, gain in by_id.items()})
    return rows, gains


def _write_rows(
    store: VectorStore,
    before: Mapping[str, ImageRecord],
    rows: Mapping[str, ImageRecord],
    gone: set[str],
) -> None:
    """Rows without the paths that went (deleted when none is left), with their gains."""
    emptied = []
    changed = []
    for record in rows.values():
        remaining = [p for p in record.all_paths if p not in gone]
        if not remaining:
            emptied.append(record.id)
            continue
        updated = replace(record, path=remaining[0], paths=tuple(remaining))
        if updated != before[record.id]:
            changed.append(updated)
    store.replace(changed)
    store.delete(emptied)


def _record(
    decisions: Decisions,
    groups: Sequence[DuplicateGroup],
    gone: Sequence[tuple[DuplicateGroup, Member]],
    done: Mapping[str, FileAction],
    gains: Mapping[tuple[str, str], Gain],
    manifest: Path | str | None,
) -> None:
    """The groups resolved, and each keeper's history of what merged into it."""
    now = time.time()
    for group in groups:
        members = [m for g, m in gone if g is group]
        resolved = list(dict.fromkeys(m.id for m in members if m.id != group.keeper.id))
        if resolved:
            decisions.record("resolved", group.keeper.id, resolved)
        if members:
            decisions.record_history(
                group.keeper.id,
                [
                    {
                        "event": "moved" if done[m.path].target else "deleted",
                        "id": m.id,
                        "path": m.path,
                        "target": done[m.path].target,
                        "manifest": None if manifest is None else str(manifest),
                        "gained": gains.get((group.keeper.id, m.id), Gain()).to_dict(),
                        "at": now,
                    }
                    for m in members
                ],
            )
