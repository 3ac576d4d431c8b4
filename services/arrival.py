"""Dedup on arrival: the best duplicate match of each new image among what is already stored.

Each arriving image is compared with the stored collection (a Hamming range search over its pHash
flips and rotations; a CLIP cosine search when vectors exist) and with the images that arrive in
the same batch, so a duplicate is known the moment it lands, without a rescan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from services.hashing import hamming
from services.records import ImageRecord, clip_cosine
from services.schema import NO_DISTANCE
from services.store import VectorStore

_CANDIDATES = 4


@dataclass(frozen=True)
class Match:
    """The best duplicate of one arriving image: lower Hamming first, then higher cosine."""

    dup_of: str
    hamming: int  # NO_DISTANCE when only the cosine matched
    cosine: float  # NO_DISTANCE when no CLIP vectors

    def rank(self) -> tuple[int, int, float]:
        by_hash = 0 if self.hamming != NO_DISTANCE else 1
        return (by_hash, self.hamming, -self.cosine)


def find_matches(
    store: VectorStore,
    records: Sequence[ImageRecord],
    variants: Sequence[Sequence[bytes]],
    *,
    max_hamming: int,
    min_cosine: float,
) -> list[Match | None]:
    """For each record, its best near-duplicate (another content) in the store or the batch."""
    if not records:
        return []
    best: list[Match | None] = [None] * len(records)
    groups = store.search_phash_groups(variants, max_hamming, "", _CANDIDATES + 1)
    for index, (record, hits) in enumerate(zip(records, groups, strict=True)):
        for hit in hits:
            if hit.record.id != record.id:
                cosine = _cosine(record, hit.record)
                best[index] = _better(best[index], Match(hit.record.id, hit.hamming, cosine))
                break
    if store.has_clip and all(r.clip is not None for r in records):
        vectors = [r.clip for r in records if r.clip is not None]
        clip_groups = store.search_clip_many(vectors, "", _CANDIDATES + 1)
        for index, clip_hits in enumerate(clip_groups):
            for clip_hit in clip_hits:
                if clip_hit.record.id != records[index].id and clip_hit.cosine >= min_cosine:
                    candidate = Match(clip_hit.record.id, NO_DISTANCE, clip_hit.cosine)
                    best[index] = _better(best[index], candidate)
                    break
    for index, match in enumerate(_within_batch(records, variants, max_hamming, min_cosine)):
        if match is not None:
            best[index] = _better(best[index], match)
    return best


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
) -> list[Match | None]:
    """Each record against the ones before it in the batch (they are not stored yet)."""
    found: list[Match | None] = [None] * len(records)
    for i, record in enumerate(records):
        for j in range(i):
            other = records[j]
            if other.id == record.id:
                continue
            distance = min(hamming(v, other.phash) for v in variants[i])
            cosine = _cosine(record, other)
            if distance <= max_hamming:
                candidate = Match(other.id, distance, cosine)
            elif cosine >= min_cosine:
                candidate = Match(other.id, NO_DISTANCE, cosine)
            else:
                continue
            found[i] = _better(found[i], candidate)
    return found


def _cosine(a: ImageRecord, b: ImageRecord) -> float:
    cosine = clip_cosine(a, b)
    return float(NO_DISTANCE) if cosine is None else cosine


def _better(current: Match | None, candidate: Match) -> Match:
    return candidate if current is None or candidate.rank() < current.rank() else current
