"""Synthetic stored records with known structure, for store and search tests."""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np

from services.records import ImageRecord

SOURCES = ("phone", "camera", "scan")
TAGS = ("cat", "dog", "beach", "city", "night")


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def random_records(
    n: int, *, dim: int | None = 8, seed: int = 0, groups: int = 50
) -> list[ImageRecord]:
    """``n`` records whose pHashes cluster around ``groups`` bases (so Hamming balls are
    populated) with random metadata and unit CLIP vectors."""
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 256, size=(groups, 8), dtype=np.uint8)
    vectors = unit_vectors(rng, n, dim) if dim else None
    records = []
    for i in range(n):
        bits = np.unpackbits(bases[i % groups])
        flips = rng.choice(64, size=int(rng.integers(0, 16)), replace=False)
        bits[flips] ^= 1
        has_gps = bool(rng.random() < 0.3)
        has_date = bool(rng.random() < 0.7)
        records.append(
            ImageRecord(
                id=hashlib.sha256(f"{seed}-{i}".encode()).hexdigest(),
                path=f"/photos/{i:05d}.jpg",
                phash=np.packbits(bits).tobytes(),
                phash_dihedral=tuple(
                    rng.integers(0, 256, 8, dtype=np.uint8).tobytes() for _ in range(7)
                ),
                width=int(rng.integers(64, 4000)),
                height=int(rng.integers(64, 4000)),
                format=str(rng.choice(["JPEG", "PNG", "WEBP"])),
                bytes=int(rng.integers(1000, 10**7)),
                source=SOURCES[i % len(SOURCES)],
                tags=tuple(
                    str(t) for t in rng.choice(TAGS, size=int(rng.integers(0, 3)), replace=False)
                ),
                exif_datetime=datetime(2015 + i % 10, 1 + i % 12, 1 + i % 28, 12)
                if has_date
                else None,
                camera_make="Canon" if i % 2 else "Nikon",
                gps_lat=float(rng.uniform(-80, 80)) if has_gps else None,
                gps_lon=float(rng.uniform(-170, 170)) if has_gps else None,
                ingested_at=1_700_000_000 + i,
                clip=vectors[i] if vectors is not None else None,
            )
        )
    return records
