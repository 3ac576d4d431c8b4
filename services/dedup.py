"""Duplicate groups over a whole collection (or its filtered part).

- **exact**: byte-identical files, i.e. the several paths of one stored content (same sha256);
- **near**: pairs within the pHash Hamming radius, over the 8 flips and rotations, found for all
  rows at once by an index built for it (:mod:`services.hamming_pairs`), plus, when CLIP vectors
  exist, pairs above a cosine threshold (crops and edits that hashes miss).

Pairs become candidate groups by union-find; each group is then **anchored on its keeper**: a
member stays only if it is itself a pair with the keeper, so a chain a~b~c never puts a next to
an unrelated c. Members left out form groups of their own the same way. Decisions (a group
marked "not duplicates", or resolved) suppress their pairs in later runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from services import fileops
from services.fileops import FileAction
from services.hamming_pairs import PairSet, codes_from_bytes, pairs_within
from services.keepers import Candidate, Criterion, choose_keeper, pinned
from services.records import ImageRecord, clip_cosine
from services.settings import setting_default
from services.store import VectorStore

log = logging.getLogger(__name__)

GroupKind = Literal["exact", "near"]
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
_CLIP_CHUNK = 1024


class Decisions(Protocol):
    """Where analysts' verdicts persist (Redis in lookalike's deployments)."""

    def suppressed_pairs(self) -> set[tuple[str, str]]: ...
    def record(
        self, kind: Literal["not_duplicates", "resolved"], keeper: str, members: Sequence[str]
    ) -> None: ...
    def pinned_keepers(self) -> set[str]: ...


@dataclass(frozen=True)
class Link:
    """Why two contents are near-duplicates."""

    hamming: int | None = None
    variant: int = 0
    cosine: float | None = None

    def merged(self, other: Link) -> Link:
        """The stronger evidence of both: the smaller distance, the larger cosine."""
        closer = (
            other
            if other.hamming is not None and (self.hamming is None or other.hamming < self.hamming)
            else self
        )
        cosines = [c for c in (self.cosine, other.cosine) if c is not None]
        return Link(closer.hamming, closer.variant, max(cosines) if cosines else None)

    def describe(self) -> str:
        parts = []
        if self.hamming is not None:
            parts.append(f"pHash distance {self.hamming} ({VARIANT_NAMES[self.variant]})")
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
) -> DedupReport:
    """Every duplicate group in the (filtered) collection, largest first."""
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
    scanned = 0
    if not options.exact_only:
        if with_clip:
            # CLIP pairs need every vector: one light scan with vectors.
            records = list(
                store.iterate(options.where, with_vectors=True, light=True, batch_size=4000)
            )
            links = near_links(records, options.max_hamming, options.min_cosine)
            scanned = len(records)
        else:
            records, links, scanned = _hash_links_from_scan(store, options)
        links = {
            pair: link
            for pair, link in links.items()
            if _key(records[pair[0]].id, records[pair[1]].id) not in suppressed
        }
        groups += near_groups(records, links, policy)
    groups.sort(key=lambda g: (-len(g.members), g.kind, g.keeper.path))
    stats: dict[str, float | int] = {
        "rows": scanned,
        "pairs": len(links),
        "groups": len(groups),
        "exact_groups": sum(1 for g in groups if g.kind == "exact"),
        "near_groups": sum(1 for g in groups if g.kind == "near"),
        "duplicates": sum(len(g.duplicates) for g in groups),
        "suppressed_pairs": len(suppressed),
    }
    return DedupReport(groups, stats)


def _hash_links_from_scan(
    store: VectorStore, options: DedupOptions
) -> tuple[list[ImageRecord], dict[tuple[int, int], Link], int]:
    """pHash pairs from one scan of ids, hashes and keeper fields (as columns); records are made
    only for the rows in pairs: the whole collection never travels as records, and no row is
    read twice."""
    scan = store.scan_hashes(options.where, keepers=True)
    found = pairs_within(scan.codes, options.max_hamming, variants=scan.variants)
    involved = sorted(set(found.left.tolist()) | set(found.right.tolist()))
    position = {row: index for index, row in enumerate(involved)}
    columns = scan.keepers
    assert columns is not None
    codes = scan.codes.tolist()
    records = [columns.record(row, scan.ids[row], codes[row]) for row in involved]
    return records, _pair_links(found, position), len(scan.ids)


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
    if min_cosine is not None:
        for pair, cosine in clip_pairs(records, min_cosine):
            links[pair] = links.get(pair, Link()).merged(Link(cosine=cosine))
    for pair, link in list(links.items()):
        if link.hamming is not None and link.cosine is None:
            links[pair] = Link(link.hamming, link.variant, _cosine(records, pair))
    return links


def clip_pairs(
    records: Sequence[ImageRecord], min_cosine: float
) -> Iterable[tuple[tuple[int, int], float]]:
    """Pairs with cosine >= ``min_cosine``, in row chunks: memory O(chunk x N), never N x N."""
    vectors = np.stack([r.clip for r in records if r.clip is not None]).astype(np.float32)
    if len(vectors) != len(records):
        return
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    for start in range(0, len(vectors), _CLIP_CHUNK):
        sims = vectors[start : start + _CLIP_CHUNK] @ vectors.T
        rows, cols = np.nonzero(sims >= min_cosine)
        for row, col in zip(rows.tolist(), cols.tolist(), strict=True):
            i = start + row
            if i < col:
                yield (i, col), float(sims[row, col])


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


def resolve(
    store: VectorStore,
    groups: Sequence[DuplicateGroup],
    *,
    move_to: Path | None,
    delete_files: bool,
    decisions: Decisions | None,
) -> list[FileAction]:
    """Move (or delete) every group's duplicates, update their rows, record the groups resolved.

    Keepers are never touched. A row loses the paths that moved away; a row with none left is
    deleted from the collection.
    """
    paths = [m.path for g in groups for m in g.duplicates if m.path != g.keeper.path]
    if move_to is not None:
        actions = fileops.move_into(paths, move_to)
    elif delete_files:
        actions = fileops.delete(paths)
    else:
        return []
    gone = {a.path for a in actions if a.done}
    _drop_paths(store, {m.id for g in groups for m in g.duplicates if m.path in gone}, gone)
    if decisions is not None:
        for group in groups:
            done = [m.id for m in group.duplicates if m.path in gone and m.id != group.keeper.id]
            if done:
                decisions.record("resolved", group.keeper.id, done)
    return actions


def _drop_paths(store: VectorStore, ids: set[str], gone: set[str]) -> None:
    records = store.get(sorted(ids), with_vectors=True)
    emptied = []
    changed = []
    for record in records:
        remaining = [p for p in record.all_paths if p not in gone]
        if not remaining:
            emptied.append(record.id)
        elif len(remaining) != len(record.all_paths):
            changed.append(replace(record, path=remaining[0], paths=tuple(remaining)))
    store.replace(changed)
    store.delete(emptied)
