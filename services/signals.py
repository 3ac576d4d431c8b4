"""Query signals for apps that search lookalike's collections with their own Milvus client.

An app holding only the read-only user cannot open a :class:`services.store.MilvusStore` (it loads
collections), but it can search with pymilvus directly (docs/apps.md). What it needs from
lookalike is the query side of the schema contract: an image's pHash variants and CLIP vector,
computed exactly as ingestion computed the stored ones, and the search parameters that match.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.decode import load_image_bytes
from services.embed import Embedder
from services.errors import QueryError
from services.frames import frame_codes, frame_queries
from services.hashing import image_variants, stored_hashes
from services.patches import image_patch_codes
from services.pipeline import collection_draft_size, draft_size
from services.schema import (
    DIHEDRAL_VARIANTS,
    PHASH_BITS,
    clip_search_params,
    phash_search_params,
)
from services.search import QuerySignals
from services.settings import setting_default

DEFAULT_MAX_PIXELS: int = setting_default("max_image_pixels")
# Re-exported: the search parameters that match the contract, for apps.
__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FrameSignals",
    "clip_search_params",
    "frame_signals",
    "phash_search_params",
    "query_signals",
    "stored_variants",
]


def query_signals(
    data: bytes,
    *,
    embedder: Embedder | None = None,
    name: str = "query image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> QuerySignals:
    """The pHash of ``data`` and of its 7 flips and rotations (identity first, then the order of
    the ``phash_dihedral`` field), and its CLIP vector when ``embedder`` is given.

    Decoded as ingestion decodes (upright, JPEG draft scale); DecodeError names ``name``.
    """
    loaded = load_image_bytes(data, name, max_pixels=max_pixels, draft_size=draft_size(embedder))
    _, variants = stored_hashes(loaded.image)
    clip = embedder.embed_images([loaded.image])[0] if embedder is not None else None
    return QuerySignals(phash_variants=tuple(variants), clip=clip)


def stored_variants(row: Mapping[str, Any]) -> tuple[bytes, ...]:
    """The 8 pHash variants of a stored row (``phash`` and ``phash_dihedral``): the query that
    finds the row's flipped and rotated copies."""
    phash = row["phash"]
    own = bytes(phash[0] if isinstance(phash, list) else phash)
    dihedral = str(row.get("phash_dihedral", ""))
    if len(own) != PHASH_BITS // 8 or len(dihedral) != 16 * DIHEDRAL_VARIANTS:
        raise QueryError(
            f"row {row.get('id', '?')!r} lacks its pHash or its {DIHEDRAL_VARIANTS} dihedral "
            "hashes: read it with output_fields=['phash', 'phash_dihedral']"
        )
    return (own, *(bytes.fromhex(dihedral[i : i + 16]) for i in range(0, len(dihedral), 16)))


@dataclass(frozen=True)
class FrameSignals:
    """What an app needs to find copies of an image whose frame differs (docs/apps.md)."""

    phash: bytes  # the whole frame's pHash, as the stored ``phash``
    frame_codes: str  # as the stored ``frame_codes``: content region, windows 90/80/70
    # Search ``phash`` with these: the content region's 8 flips and turns where the image has a
    # border, then its 3 centred windows (what dedup on arrival searches with).
    queries: tuple[bytes, ...]
    patch_codes: str = ""  # as the stored ``patch_codes`` (services.patches)


def frame_signals(
    data: bytes,
    *,
    clip: bool,
    name: str = "query image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FrameSignals:
    """The frame and patch codes of ``data``, decoded as ingestion decodes for a collection with
    (``clip``) or without CLIP vectors, so they agree with the stored ones bit for bit."""
    draft = collection_draft_size(clip=clip)
    loaded = load_image_bytes(data, name, max_pixels=max_pixels, draft_size=draft)
    whole = image_variants(loaded.image)[0]
    codes = frame_codes(loaded.image, whole)
    patches = image_patch_codes(loaded.image, codes)
    return FrameSignals(
        whole, codes.to_hex(), tuple(frame_queries(loaded.image, codes)), patches.to_hex()
    )
