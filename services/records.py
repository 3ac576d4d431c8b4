"""The typed row lookalike stores per distinct image content, and its mapping to Milvus rows."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from services.frames import FrameCodes
from services.patches import PatchCodes, stored_form
from services.schema import NO_DISTANCE, PHASH_BITS, UNASSIGNED_CLUSTER

FloatVector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ImageRecord:
    """One distinct image content; ``id`` is its sha256 (hex), so writes are idempotent."""

    id: str
    path: str
    phash: bytes
    width: int
    height: int
    format: str
    bytes: int
    # pHashes of the image mirrored and rotated (services.hashing.phash_variants order, without
    # the identity): what all-pairs dedup compares against to find flipped and rotated copies.
    phash_dihedral: tuple[builtins.bytes, ...] = ()  # builtins: `bytes` is a field here
    # The content region's and centred windows' pHashes (services.frames); None where unknown
    # (a row of schema version 1 that `lookalike migrate` could not read the image of).
    frames: FrameCodes | None = None
    # The codes of patches anchored at the image's blobs (services.patches); None where unknown
    # (a row of an older schema version that `lookalike migrate` could not read the image of).
    patches: PatchCodes | None = None
    ahash: str = ""
    dhash: str = ""
    colorhash: str = ""
    paths: tuple[str, ...] = ()
    source: str = ""
    tags: tuple[str, ...] = ()
    exif_datetime: datetime | None = None
    camera_make: str = ""
    camera_model: str = ""
    gps_lat: float | None = None
    gps_lon: float | None = None
    ingested_at: int = 0
    cluster: int = UNASSIGNED_CLUSTER
    dup_of: str = ""
    dup_hamming: int = NO_DISTANCE
    dup_cosine: float = float(NO_DISTANCE)
    clip: FloatVector | None = field(default=None, compare=False, repr=False)

    @property
    def sha256(self) -> str:
        return self.id

    @property
    def has_gps(self) -> bool:
        return self.gps_lat is not None and self.gps_lon is not None

    def merged_with(self, stored: ImageRecord) -> ImageRecord:
        """This record written over ``stored`` (same content): keep first path, union paths/tags."""
        paths = tuple(dict.fromkeys((*stored.all_paths, *self.all_paths)))
        tags = tuple(dict.fromkeys((*stored.tags, *self.tags)))
        return replace(
            self,
            path=stored.path,
            paths=paths,
            tags=tags,
            source=stored.source or self.source,
            ingested_at=stored.ingested_at or self.ingested_at,
            cluster=stored.cluster,
            dup_of=stored.dup_of or self.dup_of,
            dup_hamming=stored.dup_hamming if stored.dup_of else self.dup_hamming,
            dup_cosine=stored.dup_cosine if stored.dup_of else self.dup_cosine,
        )

    def adds_to(self, stored: ImageRecord) -> bool:
        """Whether writing this record over ``stored`` (same content) would change the row: a
        new path, a new tag, or a source where the row has none."""
        return (
            self.path not in stored.all_paths
            or not set(self.tags) <= set(stored.tags)
            or bool(self.source and not stored.source)
        )

    @property
    def all_paths(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.path, *self.paths)))


def exif_timestamp(moment: datetime | None) -> int:
    """EXIF times carry no zone: they are stored as if UTC, seconds since the epoch."""
    if moment is None:
        return 0
    return int(moment.replace(tzinfo=UTC).timestamp())


def to_row(record: ImageRecord, *, with_clip: bool, max_paths: int) -> dict[str, Any]:
    """The Milvus row for ``record`` (sentinels stand in for missing values: Lite has no nulls)."""
    if len(record.phash) != PHASH_BITS // 8:
        raise ValueError(f"pHash of {record.path} has {len(record.phash)} bytes, expected 8")
    row: dict[str, Any] = {
        "id": record.id,
        "phash": record.phash,
        "phash_dihedral": "".join(v.hex() for v in record.phash_dihedral),
        "frame_codes": record.frames.to_hex() if record.frames is not None else "",
        "patch_codes": stored_form(record.patches),
        "path": record.path,
        "paths": list(record.all_paths[:max_paths]),
        "path_count": len(record.all_paths),
        "source": record.source,
        "tags": list(record.tags),
        "format": record.format,
        "width": record.width,
        "height": record.height,
        "bytes": record.bytes,
        "has_exif_date": record.exif_datetime is not None,
        "exif_ts": exif_timestamp(record.exif_datetime),
        "camera_make": record.camera_make,
        "camera_model": record.camera_model,
        "has_gps": record.has_gps,
        "gps_lat": record.gps_lat if record.gps_lat is not None else 0.0,
        "gps_lon": record.gps_lon if record.gps_lon is not None else 0.0,
        "ahash": record.ahash,
        "dhash": record.dhash,
        "colorhash": record.colorhash,
        "ingested_at": record.ingested_at,
        "cluster": record.cluster,
        "dup_of": record.dup_of,
        "dup_hamming": record.dup_hamming,
        "dup_cosine": record.dup_cosine,
    }
    if with_clip:
        if record.clip is None:
            raise ValueError(f"{record.path} has no CLIP vector but the collection stores one")
        row["clip"] = [float(x) for x in record.clip]
    return row


def binary_vector(value: Any) -> bytes:
    """A binary vector as pymilvus returns it (bytes, or a list of one bytes object) as bytes."""
    if isinstance(value, list):
        value = value[0] if value else b""
    return bytes(value)


def from_row(row: dict[str, Any]) -> ImageRecord:
    """An :class:`ImageRecord` from a Milvus row (the inverse of :func:`to_row`)."""
    clip = row.get("clip")
    has_exif = bool(row.get("has_exif_date", False))
    has_gps = bool(row.get("has_gps", False))
    return ImageRecord(
        id=str(row["id"]),
        path=str(row.get("path", "")),
        paths=tuple(row.get("paths") or ()),
        phash=binary_vector(row.get("phash", b"")),
        phash_dihedral=_split_hashes(str(row.get("phash_dihedral", ""))),
        frames=FrameCodes.from_hex(str(row.get("frame_codes", ""))),
        patches=PatchCodes.from_hex(str(row.get("patch_codes", ""))),
        width=int(row.get("width", 0)),
        height=int(row.get("height", 0)),
        format=str(row.get("format", "")),
        bytes=int(row.get("bytes", 0)),
        ahash=str(row.get("ahash", "")),
        dhash=str(row.get("dhash", "")),
        colorhash=str(row.get("colorhash", "")),
        source=str(row.get("source", "")),
        tags=tuple(row.get("tags") or ()),
        exif_datetime=(
            datetime.fromtimestamp(int(row["exif_ts"]), UTC).replace(tzinfo=None)
            if has_exif and "exif_ts" in row
            else None
        ),
        camera_make=str(row.get("camera_make", "")),
        camera_model=str(row.get("camera_model", "")),
        gps_lat=float(row["gps_lat"]) if has_gps else None,
        gps_lon=float(row["gps_lon"]) if has_gps else None,
        ingested_at=int(row.get("ingested_at", 0)),
        cluster=int(row.get("cluster", UNASSIGNED_CLUSTER)),
        dup_of=str(row.get("dup_of", "")),
        dup_hamming=int(row.get("dup_hamming", NO_DISTANCE)),
        dup_cosine=float(row.get("dup_cosine", NO_DISTANCE)),
        clip=np.asarray(clip, dtype=np.float32) if clip is not None else None,
    )


def _split_hashes(packed: str) -> tuple[bytes, ...]:
    """``phash_dihedral`` text (16 hex digits per hash, concatenated) back to 8-byte hashes."""
    width = PHASH_BITS // 4
    return tuple(bytes.fromhex(packed[i : i + width]) for i in range(0, len(packed), width))


def clip_cosine(a: ImageRecord, b: ImageRecord) -> float | None:
    """Cosine of two records' CLIP vectors; None when either has none, 0 for a zero vector."""
    if a.clip is None or b.clip is None:
        return None
    norms = float(np.linalg.norm(a.clip) * np.linalg.norm(b.clip))
    return float(np.dot(a.clip, b.clip) / norms) if norms > 0 else 0.0
