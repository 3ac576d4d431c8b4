"""Dedup on arrival: the best duplicate match of each new image among what is already stored.

Each arriving image is compared with the stored collection (its pHash flips and rotations within
a Hamming radius; a CLIP cosine search when vectors exist) and with the images that arrive in
the same batch, so a duplicate is known the moment it lands, without a rescan.

The Hamming stage asks an in-process :class:`~services.arrival_index.ArrivalIndex` when one is
given (a worker's; no scan of the collection, and no read: deletions reach it through its feed);
without one it is a Milvus range search per batch (which scans every row on Milvus Lite). With
CLIP, the cosine of a pHash match comes from the batch's cosine search when the match is among
its hits, else from one read of the matched rows' vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from services.arrival_index import ArrivalIndex
from services.code_index import CodeHit
from services.hamming_pairs import codes_from_bytes
from services.patch_pairs import pairs_of_codes
from services.records import ImageRecord, clip_cosine
from services.schema import NO_DISTANCE
from services.store import Neighbour, VectorStore

_CANDIDATES = 4


@dataclass(frozen=True)
class Match:
    """The best duplicate of one arriving image: a pHash (or frame code) match first, nearest
    first; then a match by patch codes, most patches first; then by cosine alone. Higher cosine
    breaks ties."""

    dup_of: str
    hamming: int  # NO_DISTANCE when no pHash or frame code matched
    cosine: float  # NO_DISTANCE when no CLIP vectors
    patches: int = 0  # patch codes that agree, for a match by them (services.patches)

    def rank(self) -> tuple[int, int, int, float]:
        by = 0 if self.hamming != NO_DISTANCE else 1 if self.patches else 2
        return (by, self.hamming, -self.patches, -self.cosine)


def find_matches(
    store: VectorStore,
    records: Sequence[ImageRecord],
    variants: Sequence[Sequence[bytes]],
    *,
    max_hamming: int,
    min_cosine: float,
    index: ArrivalIndex | None = None,
    patches: bool = False,
) -> list[Match | None]:
    """For each record, its best near-duplicate (another content) in the store or the batch.

    ``index``: the stored codes to look in (its kinds' radii apply, and its patch codes when it
    holds them), else a Milvus search (which cannot search patch codes). ``patches``: records of
    the batch are also matched with each other by their patch codes (as they are whenever the
    index holds patch codes)."""
    if not records:
        return []
    patches = patches or (index is not None and index.codes.patch_radius is not None)
    best: list[Match | None] = [None] * len(records)
    clip_groups: list[list[Neighbour]] = [[] for _ in records]
    if store.has_clip and all(r.clip is not None for r in records):
        vectors = [r.clip for r in records if r.clip is not None]
        clip_groups = store.clip_neighbours(vectors, _CANDIDATES + 1)
    by_hash = (
        _search_hashes(store, records, variants, max_hamming)
        if index is None
        else _indexed_hashes(store, index, records, variants, clip_groups)
    )
    for position, match in enumerate(by_hash):
        if match is not None:
            best[position] = _better(best[position], match)
    for position, clip_hits in enumerate(clip_groups):
        for clip_hit in clip_hits:
            if clip_hit.id != records[position].id and clip_hit.cosine >= min_cosine:
                candidate = Match(clip_hit.id, NO_DISTANCE, clip_hit.cosine)
                best[position] = _better(best[position], candidate)
                break
    within = _within_batch(records, variants, max_hamming, min_cosine, patches=patches)
    for position, match in enumerate(within):
        if match is not None:
            best[position] = _better(best[position], match)
    return best


def _search_hashes(
    store: VectorStore,
    records: Sequence[ImageRecord],
    variants: Sequence[Sequence[bytes]],
    max_hamming: int,
) -> list[Match | None]:
    """The nearest stored row of each record by a Milvus range search over its variants."""
    found: list[Match | None] = [None] * len(records)
    groups = store.search_phash_groups(variants, max_hamming, "", _CANDIDATES + 1)
    for position, (record, hits) in enumerate(zip(records, groups, strict=True)):
        for hit in hits:
            if hit.record.id != record.id:
                cosine = _cosine(record, hit.record)
                found[position] = Match(hit.record.id, hit.hamming, cosine)
                break
    return found


def _indexed_hashes(
    store: VectorStore,
    index: ArrivalIndex,
    records: Sequence[ImageRecord],
    variants: Sequence[Sequence[bytes]],
    clip_groups: Sequence[Sequence[Neighbour]],
) -> list[Match | None]:
    """The nearest stored row of each record by the index (which hears of deletions through
    its feed). A record with a CLIP vector takes its match's cosine from ``clip_groups`` (its
    cosine search) when the match is there; the others' matched rows are read, one read per
    round, and a row found gone is forgotten and the next candidate taken."""
    index.refresh()
    candidates = [
        [hit for hit in hits if hit.id != record.id]
        for record, hits in zip(records, index.near(records, variants), strict=True)
    ]
    found: list[Match | None] = [None] * len(records)
    unread: dict[int, list[CodeHit]] = {}
    for position, (record, hits) in enumerate(zip(records, candidates, strict=True)):
        if not hits:
            continue
        nearest = hits[0]
        if record.clip is None or not store.has_clip:
            found[position] = _match(nearest, float(NO_DISTANCE))
            continue
        cosine = next((h.cosine for h in clip_groups[position] if h.id == nearest.id), None)
        if cosine is not None:
            found[position] = _match(nearest, cosine)
        else:
            unread[position] = hits
    tried = 0
    while unread:
        # The next _CANDIDATES hits of each record still without a cosine: one read.
        wanted = {hit.id for hits in unread.values() for hit in hits[tried : tried + _CANDIDATES]}
        rows = {r.id: r for r in store.get(sorted(wanted), with_vectors=True, light=True)}
        index.forget(sorted(wanted - rows.keys()))
        for position, hits in list(unread.items()):
            window = hits[tried : tried + _CANDIDATES]
            hit = next((h for h in window if h.id in rows), None)
            if hit is not None:
                found[position] = _match(hit, _cosine(records[position], rows[hit.id]))
            if hit is not None or len(hits) <= tried + _CANDIDATES:
                del unread[position]
        tried += _CANDIDATES
    return found


def _match(hit: CodeHit, cosine: float) -> Match:
    return Match(hit.id, hit.distance, cosine, hit.shared)


def with_matches(
    records: Sequence[ImageRecord], matches: Sequence[Match | None]
) -> list[ImageRecord]:
    """``records`` with their ``dup_*`` fields set from ``matches``."""
    return [
        replace(r, dup_of=m.dup_of, dup_hamming=m.hamming, dup_cosine=m.cosine) if m else r
        for r, m in zip(records, matches, strict=True)
    ]


def _within_batch(
    records: Sequence[ImageRecord],
    variants: Sequence[Sequence[bytes]],
    max_hamming: int,
    min_cosine: float,
    *,
    patches: bool,
) -> list[Match | None]:
    """Each record against the ones before it in the batch (they are not stored yet).

    The distances of every (query code of i, pHash of j) come from one numpy pass; only the
    pairs within ``max_hamming`` are looked at one by one, and every earlier record where ``i``
    has a CLIP vector (its cosine may match alone). Records whose patch codes agree are paired
    as whole-collection dedup pairs them (:func:`services.patch_pairs.pairs_of_codes`)."""
    found: list[Match | None] = [None] * len(records)
    if len(records) < 2:
        return found
    if patches:
        agreeing = pairs_of_codes([r.patches for r in records], max_hamming)
        for i, j, shared in zip(
            agreeing.left.tolist(), agreeing.right.tolist(), agreeing.shared.tolist(), strict=True
        ):
            if records[i].id != records[j].id:
                candidate = Match(
                    records[i].id, NO_DISTANCE, _cosine(records[j], records[i]), shared
                )
                found[j] = _better(found[j], candidate)
    distances = _query_distances(records, variants)
    for i, record in enumerate(records):
        close = (
            range(i) if record.clip is not None else np.flatnonzero(distances[i, :i] <= max_hamming)
        )
        for j in close:
            other = records[int(j)]
            if other.id == record.id:
                continue
            distance = int(distances[i, j])
            cosine = _cosine(record, other)
            if distance <= max_hamming:
                candidate = Match(other.id, distance, cosine)
            elif cosine >= min_cosine:
                candidate = Match(other.id, NO_DISTANCE, cosine)
            else:
                continue
            found[i] = _better(found[i], candidate)
    return found


def _query_distances(
    records: Sequence[ImageRecord], variants: Sequence[Sequence[bytes]]
) -> npt.NDArray[np.int64]:
    """(n, n): the smallest Hamming distance from a query code of record i to the pHash of j."""
    width = max(1, *(len(v) for v in variants))
    rows = [
        [*v, *[v[0] if v else r.phash] * (width - len(v))]
        for r, v in zip(records, variants, strict=True)
    ]
    queries = codes_from_bytes([code for row in rows for code in row]).reshape(len(rows), width)
    own = codes_from_bytes([r.phash for r in records])
    pairs = np.bitwise_count(queries[:, :, None] ^ own[None, None, :])
    distances: npt.NDArray[np.int64] = pairs.min(axis=1).astype(np.int64)
    return distances


def _cosine(a: ImageRecord, b: ImageRecord) -> float:
    cosine = clip_cosine(a, b)
    return float(NO_DISTANCE) if cosine is None else cosine


def _better(current: Match | None, candidate: Match) -> Match:
    return candidate if current is None or candidate.rank() < current.rank() else current
