"""Hybrid search: metadata filter, then a Hamming pre-filter on pHash, then a cosine rerank on CLIP.

One query object, one function. The other modes (text-to-image, image-to-image on CLIP alone,
neighbours of a stored image) are the same function with a different query. The filter and the
Hamming stage commute; which runs first is a cost decision (see ``_hamming_stage``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from services.code_index import CodeHit, StoredCodes
from services.embed import Embedder
from services.errors import QueryError
from services.filters import Condition, compile_filter, row_predicate
from services.frames import frame_codes, frame_queries
from services.hashing import image_variants
from services.patches import PatchCodes, image_patch_codes
from services.records import FloatVector, ImageRecord, to_row
from services.schema import MAX_PATHS
from services.settings import setting_default
from services.store import MAX_SEARCH_LIMIT, PhashHit, VectorStore

Mode = Literal["hybrid", "phash", "clip", "text"]
DEFAULT_MAX_HAMMING: int = setting_default("search_max_hamming")
# Up to this radius a range search returns few hits (near-duplicates), so they come with their
# paths and tags in the same request; a wider radius reads light hits and then the top-k rows.
WHOLE_HITS_MAX_HAMMING = 12
# Within the same radius the metadata filter runs on those few hits, in process, after a range
# search without it. Milvus Lite evaluates a filter over every row of the collection before it
# searches: at 1,000,000 rows a `source in [...]` with a date range costs ~18 ms, a tag ~50 ms,
# the 8-variant range search ~16 ms (docs/benchmarks.md). Hits that reach the limit, or a wider
# radius, fall back to the filter in Milvus, so the answer is the same either way
# (tests/services/test_search.py).


@dataclass(frozen=True)
class QuerySignals:
    """Signals computed elsewhere (an app, a worker): pHash variants and/or a CLIP vector, and
    the image's patch codes (services.patches.image_patch_codes) where they are known."""

    phash_variants: tuple[bytes, ...] | None = None
    clip: FloatVector | None = None
    patches: PatchCodes | None = None


class PatchSearch(Protocol):
    """Stored rows by their patch codes (an in-process index: Milvus cannot search the codes
    of a VARCHAR): :class:`services.arrival_index.ArrivalIndex` with patch codes."""

    def agreeing(self, codes: PatchCodes) -> Sequence[CodeHit]: ...


class LoadedPatches:
    """Every stored row's patch codes, read once: a :class:`PatchSearch` for a process that
    searches and exits (``lookalike search --patches``); a long-running one keeps an
    :class:`services.arrival_index.ArrivalIndex` current through the code feed instead."""

    def __init__(self, store: VectorStore, radius: int) -> None:
        scan = store.scan_codes([], patches=True)
        self._codes = StoredCodes((), patch_radius=radius)
        self._codes.add_patches(scan.ids, scan.patches or [])

    def agreeing(self, codes: PatchCodes) -> Sequence[CodeHit]:
        return self._codes.near_patches([codes])[0]


@dataclass(frozen=True)
class SearchQuery:
    """Exactly one of ``image``, ``text``, ``id``, ``signals`` says what to look for.

    ``max_hamming`` set: Hamming pre-filter on pHash (inclusive radius), then a cosine rerank when
    CLIP vectors exist. ``max_hamming`` None: nearest neighbours by CLIP cosine alone. Text
    queries have no pHash stage.
    """

    image: Image.Image | None = None
    text: str | None = None
    id: str | None = None
    signals: QuerySignals | None = None
    where: tuple[Condition, ...] = ()
    max_hamming: int | None = DEFAULT_MAX_HAMMING
    top_k: int = 20
    candidate_limit: int = MAX_SEARCH_LIMIT
    # The Hamming stage also matches the query's frame codes (services.frames: its content
    # region when it has a border, its centred windows), so that a bordered or larger copy of a
    # stored image is found; a stored image's own stored frame codes when ``id`` is given.
    frames: bool = True


@dataclass(frozen=True)
class SearchHit:
    record: ImageRecord
    cosine: float | None
    hamming: int | None
    patches: int = 0  # patch codes that agree, for a hit found by them (hamming None)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def path(self) -> str:
        return self.record.path

    def to_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "id": record.id,
            "path": record.path,
            "cosine": None if self.cosine is None else round(self.cosine, 6),
            "hamming": self.hamming,
            "patches": self.patches,
            "width": record.width,
            "height": record.height,
            "format": record.format,
            "bytes": record.bytes,
            "source": record.source,
            "tags": list(record.tags),
            "exif_datetime": record.exif_datetime.isoformat() if record.exif_datetime else None,
            "camera_make": record.camera_make,
            "camera_model": record.camera_model,
            "gps": [record.gps_lat, record.gps_lon] if record.has_gps else None,
            "cluster": record.cluster,
        }


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    mode: Mode
    candidates: int  # rows that passed the Hamming stage (hybrid/phash) or were returned (clip)
    truncated: bool  # the Hamming stage hit its candidate limit: widen less, or filter more
    elapsed_ms: float
    stage_ms: dict[str, float] = field(default_factory=dict)


def search(
    store: VectorStore,
    embedder: Embedder | None,
    query: SearchQuery,
    *,
    patches: PatchSearch | None = None,
) -> SearchResult:
    """Run ``query`` against ``store``; ``embedder`` may be None in hash-only deployments.

    ``patches``: the stored rows' patch codes; the Hamming stage then also takes the rows whose
    patches agree with the query's (an off-centre crop of a stored image, or a stored crop of
    the query: services.patches), whatever its radius, when ``query.frames``."""
    validate(query)
    started = time.perf_counter()
    stages: dict[str, float] = {}
    expr = compile_filter(query.where)
    use_patches = patches is not None and query.frames
    variants, vector, exclude, codes = _query_signals(store, embedder, query, stages, use_patches)
    if variants is not None and query.max_hamming is not None:
        mode: Mode = "hybrid" if vector is not None else "phash"
        phash_hits, truncated = _hamming_stage(store, query, variants, expr, vector, stages)
        phash_hits = [hit for hit in phash_hits if hit.record.id != exclude]
        by_patches: list[SearchHit] = []
        if patches is not None and codes is not None:
            tick = time.perf_counter()
            found = {hit.record.id for hit in phash_hits} | {exclude}
            by_patches, over = _patch_stage(store, patches, codes, query, found, vector is not None)
            truncated = truncated or over
            stages["patches_ms"] = _ms(tick)
        tick = time.perf_counter()
        hits = _rerank(phash_hits, vector, by_patches)
        stages["rerank_ms"] = _ms(tick)
        candidates = len(phash_hits) + len(by_patches)
        whole = query.max_hamming <= WHOLE_HITS_MAX_HAMMING
    else:
        if vector is None:
            raise QueryError(
                "a search without a Hamming radius needs CLIP vectors; this deployment is "
                "hash-only (LOOKALIKE_CLIP_MODEL=none): give --max-hamming"
            )
        mode = "text" if query.text is not None else "clip"
        tick = time.perf_counter()
        limit = query.top_k + (1 if exclude else 0)
        clip_hits = store.search_clip(vector, expr, limit, whole=True)
        whole = True
        stages["clip_ms"] = _ms(tick)
        hits = [
            SearchHit(hit.record, hit.cosine, None) for hit in clip_hits if hit.record.id != exclude
        ]
        candidates, truncated = len(clip_hits), False
    hits = hits[: query.top_k]
    if not whole:
        tick = time.perf_counter()
        hits = _with_whole_rows(store, hits)
        stages["fetch_ms"] = _ms(tick)
    return SearchResult(
        hits=hits,
        mode=mode,
        candidates=candidates,
        truncated=truncated,
        elapsed_ms=_ms(started),
        stage_ms=stages,
    )


def _hamming_stage(
    store: VectorStore,
    query: SearchQuery,
    variants: Sequence[bytes],
    expr: str,
    vector: FloatVector | None,
    stages: dict[str, float],
) -> tuple[list[PhashHit], bool]:
    """The range search on pHash with the metadata filter applied; and whether the hits may
    have been cut at the limit. Within ``WHOLE_HITS_MAX_HAMMING`` the filter runs on the hits
    in process (``filter_ms``), unless they reach the limit."""
    assert query.max_hamming is not None
    limit = min(query.candidate_limit, MAX_SEARCH_LIMIT)
    whole = query.max_hamming <= WHOLE_HITS_MAX_HAMMING
    with_vectors = vector is not None
    tick = time.perf_counter()
    if expr and whole:
        hits = store.search_phash(
            variants, query.max_hamming, "", limit, whole=True, with_vectors=with_vectors
        )
        if len(hits) < limit:
            stages["hamming_ms"] = _ms(tick)
            tick = time.perf_counter()
            keep = row_predicate(query.where)
            hits = [hit for hit in hits if keep(hit.row)]
            stages["filter_ms"] = _ms(tick)
            return hits, False
    hits = store.search_phash(
        variants, query.max_hamming, expr, limit, whole=whole, with_vectors=with_vectors
    )
    stages["hamming_ms"] = _ms(tick)
    return hits, len(hits) >= limit


def _patch_stage(
    store: VectorStore,
    patches: PatchSearch,
    codes: PatchCodes,
    query: SearchQuery,
    found: set[str | None],
    with_vectors: bool,
) -> tuple[list[SearchHit], bool]:
    """The stored rows whose patch codes agree with ``codes`` and that the Hamming stage did
    not find (at most the query's candidate limit, most patches first), read whole and
    filtered by the query's conditions in process; and whether more rows agreed than the
    limit took."""
    hits = [hit for hit in patches.agreeing(codes) if hit.id not in found]
    limit = min(query.candidate_limit, MAX_SEARCH_LIMIT)
    agreeing = {hit.id: hit.shared for hit in hits[:limit]}
    if not agreeing:
        return [], False
    keep = row_predicate(query.where)
    rows = store.get(sorted(agreeing), with_vectors=with_vectors)
    kept = [
        SearchHit(record, None, None, agreeing[record.id])
        for record in rows
        if keep(to_row(record, with_clip=False, max_paths=MAX_PATHS))
    ]
    return kept, len(hits) > limit


def _with_whole_rows(store: VectorStore, hits: list[SearchHit]) -> list[SearchHit]:
    """Search stages read light rows (no paths, tags, pHash); the results get whole ones."""
    if not hits:
        return hits
    rows = {record.id: record for record in store.get([hit.id for hit in hits])}
    return [
        replace(hit, record=replace(rows[hit.id], clip=hit.record.clip)) if hit.id in rows else hit
        for hit in hits
    ]


def validate(query: SearchQuery) -> None:
    """Raise QueryError for a query no store can answer (checked by :func:`search` too)."""
    given = [n for n in ("image", "text", "id", "signals") if getattr(query, n) is not None]
    if len(given) != 1:
        raise QueryError("a search needs exactly one of an image, a text or a stored id")
    if query.top_k < 1:
        raise QueryError("top-k must be at least 1")
    if query.max_hamming is not None and query.text is None and not 0 <= query.max_hamming < 64:
        raise QueryError("max Hamming distance must be in 0..63")
    if query.text is not None and not query.text.strip():
        raise QueryError("the text query is empty")


def _query_signals(
    store: VectorStore,
    embedder: Embedder | None,
    query: SearchQuery,
    stages: dict[str, float],
    with_patches: bool,
) -> tuple[list[bytes] | None, FloatVector | None, str | None, PatchCodes | None]:
    """(pHash variants, CLIP vector, id to leave out of the results, patch codes when
    ``with_patches``) for ``query``."""
    tick = time.perf_counter()
    if query.text is not None:
        if embedder is None:
            raise QueryError("text search needs a CLIP model; this deployment is hash-only")
        vector = embedder.embed_texts([query.text])[0]
        stages["embed_ms"] = _ms(tick)
        return None, vector, None, None
    if query.image is not None:
        variants = image_variants(query.image)
        codes = None
        if query.frames:
            frames = frame_codes(query.image, variants[0])
            variants += frame_queries(query.image, frames)
            codes = image_patch_codes(query.image, frames) if with_patches else None
        stages["hash_ms"] = _ms(tick)
        vector = None
        if embedder is not None and _store_has_clip(store):
            tick = time.perf_counter()
            vector = embedder.embed_images([query.image])[0]
            stages["embed_ms"] = _ms(tick)
        return variants, vector, None, codes
    if query.signals is not None:
        given = query.signals.phash_variants
        codes = query.signals.patches if with_patches else None
        return (list(given) if given else None), query.signals.clip, None, codes
    assert query.id is not None
    found = store.get([query.id], with_vectors=True)
    if not found:
        raise QueryError(f"no stored image has id {query.id!r}")
    record = found[0]
    stages["lookup_ms"] = _ms(tick)
    # The stored flips and rotations too (rows written before they were stored have none).
    queries = [record.phash, *record.phash_dihedral]
    if query.frames and record.frames is not None:
        stored = (record.frames.content, *record.frames.windows)
        queries += [c for c in stored if c not in queries]
    return queries, record.clip, record.id, record.patches if with_patches else None


def _store_has_clip(store: VectorStore) -> bool:
    return store.contract.clip_dim is not None


def _rerank(
    phash_hits: list[PhashHit], vector: FloatVector | None, by_patches: Sequence[SearchHit] = ()
) -> list[SearchHit]:
    """Order Hamming candidates (then those found by their patches) by cosine to ``vector``
    (exact, in process); without, by Hamming, then the patches' hits by patches agreeing."""
    hits = [SearchHit(hit.record, None, hit.hamming) for hit in phash_hits]
    if vector is None:
        return hits + sorted(by_patches, key=lambda h: (-h.patches, h.record.id))
    hits += by_patches
    if not hits:
        return hits
    clips = [hit.record.clip for hit in hits]
    if any(clip is None for clip in clips):
        raise QueryError("stored rows lack CLIP vectors; cannot rerank by cosine")
    matrix = np.stack([clip for clip in clips if clip is not None]).astype(np.float64)
    cosines = cosine_similarities(matrix, np.asarray(vector, dtype=np.float64))
    ranked = [replace(hit, cosine=float(cos)) for hit, cos in zip(hits, cosines, strict=True)]
    ranked.sort(key=lambda h: (-(h.cosine or 0.0), _no_hamming(h), -h.patches, h.record.id))
    return ranked


def _no_hamming(hit: SearchHit) -> int:
    return hit.hamming if hit.hamming is not None else 64


def cosine_similarities(
    matrix: npt.NDArray[np.float64], vector: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Cosine of each row of ``matrix`` with ``vector`` (zero rows give 0)."""
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector))
    dots: npt.NDArray[np.float64] = matrix @ vector
    cosines: npt.NDArray[np.float64] = np.divide(
        dots, norms, out=np.zeros_like(dots), where=norms > 0
    )
    return cosines


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
