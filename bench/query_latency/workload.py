"""The workload of ``bench.query_latency``: synthetic rows, the queries and the search modes.

Rows: CLIP-like 512-d vectors in topics, pHashes drawn around prototypes so that the Hamming
pre-filter passes as many unrelated photos as it does on UKBench, one planted group of near
copies per 50 rows, metadata for a filter. Everything is deterministic in the seed, so the rows
can be regenerated in process to compute the exact answers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from services.filters import Condition, date_range, one_of
from services.records import ImageRecord
from services.search import QuerySignals, SearchQuery

DIM = 512
MODEL = "synthetic-clip-512"
COLLECTION = "bench_query"

CHUNK = 50_000  # rows generated at a time; a multiple of the planting stride
_STRIDE = 50  # one planted group of near copies per 50 rows
_TOPICS = 1_000
# pHash model: each row is one of _PROTOTYPES codes with every bit flipped with probability
# _FLIP, so two rows of one prototype differ in 35% of their bits. Fitted to UKBench (1000
# photos, min over the 8 query variants): the share of unrelated pairs within 10/12/14/16 bits
# is 1.5e-6/1.1e-5/5.5e-5/2.2e-4 here against 2e-6/6e-6/5.8e-5/2.7e-4 measured there.
_PROTOTYPES = 320
_FLIP = 0.226
# CLIP-like vectors: A * shared direction + B * topic centre + noise of norm S, normalised:
# unrelated rows have cosine ~0.23, rows of one topic ~0.67, near copies ~0.96.
_A, _B, _S, _COPY_NOISE = 0.5, 0.7, 0.6, 0.2
SOURCES = ("phone", "camera", "scan", "web", "whatsapp")
SOURCE_SHARE = (0.40, 0.25, 0.10, 0.15, 0.10)
TAGS = (
    "beach", "city", "family", "food", "forest", "garden", "holiday", "kids", "mountain", "night",
    "party", "pets", "portrait", "river", "road", "sea", "snow", "sport", "street", "sunset",
    "work", "wedding", "car", "bike", "museum", "concert", "friends", "school", "garden2", "rain",
)  # fmt: skip
_EPOCH_2005 = int(datetime(2005, 1, 1, tzinfo=UTC).timestamp())
_EPOCH_2025 = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
# "My own photos since 2010": keeps about half of the rows, so most copies pass it too.
FILTER: tuple[Condition, ...] = (
    one_of("source", ["phone", "camera", "whatsapp"]),
    *date_range(date(2010, 1, 1), None),
)
_FILTER_SOURCES = (0, 1, 4)
_FILTER_LOW = int(datetime(2010, 1, 1, tzinfo=UTC).timestamp())

Floats = npt.NDArray[np.float32]
Codes = npt.NDArray[np.uint64]


@dataclass(frozen=True)
class World:
    """The fixed parts of the synthetic distribution (shared direction, topics, prototypes)."""

    shared: Floats
    topics: Floats
    prototypes: Codes

    @classmethod
    def make(cls, seed: int) -> World:
        rng = np.random.default_rng([seed, 7])
        shared = _unit(rng.standard_normal(DIM))
        topics = _unit(rng.standard_normal((_TOPICS, DIM)))
        prototypes = _random_codes(rng, _PROTOTYPES)
        return cls(shared, topics, prototypes)


@dataclass
class Rows:
    """Columns of ``count`` synthetic rows (what is stored, as arrays)."""

    clip: Floats
    codes: Codes
    dihedral: Codes  # (n, 7)
    source: npt.NDArray[np.int8]
    tags: npt.NDArray[np.int8]  # (n, 3), -1 for none
    has_date: npt.NDArray[np.bool_]
    exif_ts: npt.NDArray[np.int64]
    width: npt.NDArray[np.int32]

    @classmethod
    def concat(cls, parts: Sequence[Rows]) -> Rows:
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__)
        )

    def __len__(self) -> int:
        return len(self.codes)


def _unit(x: npt.NDArray[np.float64]) -> Floats:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / norms).astype(np.float32)


def _random_codes(rng: np.random.Generator, count: int) -> Codes:
    return _pack(rng.random((count, 64)) < 0.5)


def _pack(bits: npt.NDArray[np.bool_]) -> Codes:
    """(n, 64) bits, most significant first, to (n,) uint64."""
    packed = np.packbits(bits, axis=-1)
    return np.ascontiguousarray(packed).view(">u8").astype(np.uint64).reshape(bits.shape[:-1])


def _around(rng: np.random.Generator, world: World, count: int) -> Codes:
    """Codes of unrelated photos: a prototype with each bit flipped with probability _FLIP."""
    which = rng.integers(0, _PROTOTYPES, size=count)
    return world.prototypes[which] ^ _pack(rng.random((count, 64)) < _FLIP)


def _flip_bits(rng: np.random.Generator, code: int, flips: int) -> int:
    for bit in rng.choice(64, size=flips, replace=False).tolist():
        code ^= 1 << int(bit)
    return code


def _clip_like(rng: np.random.Generator, world: World, topics: npt.NDArray[np.int64]) -> Floats:
    noise = rng.standard_normal((len(topics), DIM)) * (_S / np.sqrt(DIM))
    return _unit(_A * world.shared + _B * world.topics[topics] + noise)


def _near(rng: np.random.Generator, vector: Floats) -> Floats:
    noise = rng.standard_normal(DIM) * (_COPY_NOISE / np.sqrt(DIM))
    return _unit(vector.astype(np.float64) + noise)


def synthetic_chunk(world: World, start: int, count: int, seed: int) -> Rows:
    """Rows ``start .. start+count`` (deterministic), with one planted group per 50 rows: 2-6
    near copies of the group's first row (0-5 bits apart, CLIP cosine ~0.96)."""
    rng = np.random.default_rng([seed, start])
    clip = _clip_like(rng, world, rng.integers(0, _TOPICS, size=count))
    codes = _around(rng, world, count)
    dihedral = _around(rng, world, count * 7).reshape(count, 7)
    for base in range(0, count - 6, _STRIDE):
        for member in range(base + 1, base + int(rng.integers(2, 7))):
            codes[member] = _flip_bits(rng, int(codes[base]), int(rng.integers(0, 6)))
            clip[member] = _near(rng, clip[base])
    source = rng.choice(len(SOURCES), size=count, p=SOURCE_SHARE).astype(np.int8)
    tags = rng.integers(-1, len(TAGS), size=(count, 3)).astype(np.int8)
    has_date = rng.random(count) < 0.85
    exif_ts = np.where(has_date, rng.integers(_EPOCH_2005, _EPOCH_2025, size=count), 0)
    width = rng.choice(np.array([640, 1024, 1920, 3024, 4032], np.int32), size=count)
    return Rows(clip, codes, dihedral, source, tags, has_date, exif_ts.astype(np.int64), width)


def all_rows(world: World, count: int, seed: int) -> Iterator[tuple[int, Rows]]:
    for start in range(0, count, CHUNK):
        yield start, synthetic_chunk(world, start, min(CHUNK, count - start), seed)


def row_id(index: int) -> str:
    return hashlib.sha256(f"query-latency-{index}".encode()).hexdigest()


def records(rows: Rows, start: int) -> list[ImageRecord]:
    out = []
    for k in range(len(rows)):
        index = start + k
        when = int(rows.exif_ts[k])
        width = int(rows.width[k])
        out.append(
            ImageRecord(
                id=row_id(index),
                path=f"/photos/{index:07d}.jpg",
                phash=int(rows.codes[k]).to_bytes(8, "big"),
                phash_dihedral=tuple(int(v).to_bytes(8, "big") for v in rows.dihedral[k]),
                width=width,
                height=width * 3 // 4,
                format="JPEG",
                bytes=200_000 + index % 5_000_000,
                source=SOURCES[int(rows.source[k])],
                tags=tuple(dict.fromkeys(TAGS[t] for t in rows.tags[k].tolist() if t >= 0)),
                exif_datetime=(
                    datetime.fromtimestamp(when, UTC).replace(tzinfo=None)
                    if rows.has_date[k]
                    else None
                ),
                camera_make="Apple" if rows.source[k] == 0 else "",
                ingested_at=1_700_000_000 + index,
                clip=rows.clip[k],
            )
        )
    return out


# -- queries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """One query image's signals: 8 pHash variants (identity first) and a CLIP vector; a text
    query's CLIP vector; ``copy_of`` the stored row it copies, or -1 for a new photo."""

    variants: tuple[bytes, ...]
    clip: Floats
    text_clip: Floats
    copy_of: int


def make_queries(world: World, rows: Rows, count: int, seed: int) -> list[Query]:
    """3 in 4 queries are copies of a stored planted-group base (0-4 bits, CLIP cosine ~0.96),
    1 in 4 new photos; the 7 other variants are codes of unrelated photos."""
    rng = np.random.default_rng([seed, 99])
    bases = np.array([b for b in range(0, len(rows) - 6, _STRIDE) if b % CHUNK <= CHUNK - 7])
    queries = []
    for _ in range(count):
        others = _around(rng, world, 7)
        if len(bases) and rng.random() < 0.75:
            target = int(rng.choice(bases))
            code = _flip_bits(rng, int(rows.codes[target]), int(rng.integers(0, 5)))
            clip = _near(rng, rows.clip[target])
        else:
            target = -1
            code = int(_around(rng, world, 1)[0])
            clip = _clip_like(rng, world, rng.integers(0, _TOPICS, size=1))[0]
        topic = int(rng.integers(0, _TOPICS))
        noise = rng.standard_normal(DIM) * (0.8 / np.sqrt(DIM))
        text = _unit(0.3 * world.shared + 0.5 * world.topics[topic] + noise)
        variants = tuple(int(c).to_bytes(8, "big") for c in [code, *others.tolist()])
        queries.append(Query(variants, clip, text, target))
    return queries


class TextVectors:
    """An :class:`~services.embed.Embedder` whose text vectors are precomputed: text queries
    run the real search path; the text encoder's own cost is left out (see ``clip_speed``)."""

    model_id = MODEL
    dim = DIM

    def __init__(self, queries: Sequence[Query]) -> None:
        self._vectors = {f"query {k}": q.text_clip for k, q in enumerate(queries)}

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError("image queries come with their signals")

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[t] for t in texts])


@dataclass(frozen=True)
class Mode:
    name: str
    label: str
    build: Callable[[int, Query, int, int], SearchQuery]


def _hybrid(where: tuple[Condition, ...]) -> Callable[[int, Query, int, int], SearchQuery]:
    def build(k: int, q: Query, radius: int, top_k: int) -> SearchQuery:
        signals = QuerySignals(phash_variants=q.variants, clip=q.clip)
        return SearchQuery(signals=signals, where=where, max_hamming=radius, top_k=top_k)

    return build


def _clip(where: tuple[Condition, ...]) -> Callable[[int, Query, int, int], SearchQuery]:
    def build(k: int, q: Query, radius: int, top_k: int) -> SearchQuery:
        signals = QuerySignals(clip=q.clip)
        return SearchQuery(signals=signals, where=where, max_hamming=None, top_k=top_k)

    return build


def _text(k: int, q: Query, radius: int, top_k: int) -> SearchQuery:
    return SearchQuery(text=f"query {k}", max_hamming=None, top_k=top_k)


def _phash(k: int, q: Query, radius: int, top_k: int) -> SearchQuery:
    signals = QuerySignals(phash_variants=q.variants)
    return SearchQuery(signals=signals, max_hamming=radius, top_k=top_k)


MODES = (
    Mode("hybrid_filter", "hybrid + metadata filter (the target)", _hybrid(FILTER)),
    Mode("hybrid", "hybrid, no filter", _hybrid(())),
    Mode("text", "text-to-image (CLIP vector, no pHash)", _text),
    Mode("clip", "pure CLIP (image-to-image)", _clip(())),
    Mode("clip_filter", "pure CLIP + metadata filter", _clip(FILTER)),
    Mode("phash", "pure pHash (Hamming only)", _phash),
)


def filter_mask(rows: Rows) -> npt.NDArray[np.bool_]:
    """The rows that ``FILTER`` keeps, computed in numpy."""
    return np.isin(rows.source, _FILTER_SOURCES) & rows.has_date & (rows.exif_ts >= _FILTER_LOW)


def variant_codes(q: Query) -> Codes:
    return np.array([int.from_bytes(v, "big") for v in q.variants], dtype=np.uint64)
