"""Image files in, stored records out: decode once, hash, read metadata, embed in one batch, upsert.

This is the unit of work an ingestion worker runs; it is wired from the stages in
``decode``, ``hashing``, ``metadata``, ``embed`` and ``store``. A bad image fails alone: it is
returned as a :class:`Failure` with its reason and the rest of the batch goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from services.decode import LoadedImage, load_image_bytes
from services.embed import Embedder
from services.errors import DecodeError
from services.frames import frame_codes, frame_queries
from services.hashing import stored_hashes
from services.metadata import extract_metadata
from services.patches import image_patch_codes
from services.records import ImageRecord
from services.sources import Sources

log = logging.getLogger(__name__)

# JPEGs are decoded at a reduced scale (libjpeg's DCT scaling) that still covers what the signals
# need: 120 pixels on the short side for the hashes (the 32x32 pHash thumbnail of the whole frame
# and of its windows, and the border search of services.frames, which
# judges lines on a thumbnail of 160 pixels on the long side: a 4:3 photo drafts to 160x120 or
# more; a 32-pixel draft left it too coarse), or CLIP's 224x224 crop. A draft changes a pHash by a
# fraction of a bit on average (docs/benchmarks.md), so stored and query images are decoded the
# same way.
HASH_DRAFT_SIZE = (120, 120)
CLIP_DRAFT_SIZE = (224, 224)


@dataclass(frozen=True)
class Failure:
    path: str
    error: str


@dataclass(frozen=True)
class BatchOutcome:
    records: list[ImageRecord]
    failures: list[Failure]
    # pHashes of each record's flips and rotations (index 0 is the record's own), aligned.
    variants: list[list[bytes]] = field(default_factory=list)
    # Each record's frame queries (services.frames): its content region's flips and turns where
    # it has a border, then its centred windows; matched against stored pHashes on arrival.
    frame_queries: list[list[bytes]] = field(default_factory=list)


def draft_size(embedder: Embedder | None) -> tuple[int, int]:
    """The decode size ingestion uses: enough for CLIP when a model is loaded, else for pHash."""
    return collection_draft_size(clip=embedder is not None)


def collection_draft_size(*, clip: bool) -> tuple[int, int]:
    """The decode size ingestion uses for a collection with (``clip``) or without CLIP vectors:
    its workers load the model exactly when the collection stores vectors."""
    return CLIP_DRAFT_SIZE if clip else HASH_DRAFT_SIZE


def load_for_signals(
    path: str | Path,
    *,
    max_pixels: int,
    embedder: Embedder | None,
    sources: Sources | None = None,
    draft: tuple[int, int] | None = None,
) -> LoadedImage:
    """Decode ``path`` (a local path or an ``s3://`` URI, read through ``sources``) exactly as
    ingestion does, so query and stored signals agree. ``draft``: the decode size, when it is
    not the one ``embedder`` implies (:func:`collection_draft_size`, for work without a model)."""
    name = str(path)
    data = (sources or Sources()).read(name)
    size = draft or draft_size(embedder)
    return load_image_bytes(data, name, max_pixels=max_pixels, draft_size=size)


def analyze_batch(
    paths: Sequence[str | Path],
    embedder: Embedder | None,
    *,
    max_pixels: int,
    source: str = "",
    tags: Sequence[str] = (),
    now: int | None = None,
    sources: Sources | None = None,
) -> BatchOutcome:
    """Records for the decodable ``paths``, failures for the rest; one CLIP forward pass.
    A source that cannot be reached at all raises SourceUnavailableError (retry the batch)."""
    ingested_at = int(time.time()) if now is None else now
    sources = sources or Sources()
    loaded: list[LoadedImage] = []
    failures: list[Failure] = []
    for path in paths:
        try:
            loaded.append(
                load_for_signals(path, max_pixels=max_pixels, embedder=embedder, sources=sources)
            )
        except DecodeError as exc:
            log.info("%s (skipped, recorded as failed)", exc)
            failures.append(Failure(str(path), exc.reason))
    vectors = embedder.embed_images([item.image for item in loaded]) if embedder else None
    records, variants, queries = [], [], []
    for index, item in enumerate(loaded):
        hashes, item_variants = stored_hashes(item.image)
        variants.append(item_variants)
        frames = frame_codes(item.image, hashes.phash)
        queries.append(frame_queries(item.image, frames))
        meta = extract_metadata(item)  # computes the content sha256 once, for the id
        records.append(
            ImageRecord(
                id=meta.sha256,
                path=item.path,
                phash=hashes.phash,
                phash_dihedral=tuple(variants[-1][1:]),
                frames=frames,
                patches=image_patch_codes(item.image, frames),
                ahash=hashes.ahash,
                dhash=hashes.dhash,
                colorhash=hashes.colorhash,
                width=meta.width,
                height=meta.height,
                format=meta.format,
                bytes=meta.bytes,
                source=source,
                tags=tuple(tags),
                exif_datetime=meta.exif_datetime,
                camera_make=meta.camera_make or "",
                camera_model=meta.camera_model or "",
                gps_lat=meta.gps_lat,
                gps_lon=meta.gps_lon,
                ingested_at=ingested_at,
                clip=vectors[index] if vectors is not None else None,
            )
        )
    return BatchOutcome(records, failures, variants, queries)
