"""The collection schema: the versioned contract for every client that queries Milvus directly.

docs/schema.md is the human-readable form of this module; keep the two in step. Changing a field,
its type, a metric or the bit order is a new ``SCHEMA_VERSION``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from services.errors import QueryError, SchemaMismatchError

SCHEMA_VERSION = 3  # 2: frame_codes, 3: patch_codes (docs/schema.md, "Version history")
# The fields each schema version added to the one before: what `lookalike migrate` computes for
# the rows of a collection one version older (services.migration).
FIELDS_ADDED: dict[int, tuple[str, ...]] = {2: ("frame_codes",), 3: ("patch_codes",)}
PHASH_BITS = 64
PHASH_BIT_ORDER = (
    "msb-first"  # bit i of imagehash's flattened hash is bit (7 - i % 8) of byte i // 8
)
PHASH_METRIC = "HAMMING"
CLIP_METRIC = "COSINE"

MAX_PATH_LENGTH = 2048
MAX_PATHS = 64
MAX_TAGS = 64
MAX_TAG_LENGTH = 128
MAX_SOURCE_LENGTH = 256
MAX_TEXT_LENGTH = 256

DIHEDRAL_VARIANTS = 7  # mirror, rotations 90/180/270, mirror + rotations 90/180/270
UNASSIGNED_CLUSTER = -1
NO_DISTANCE = -1


class FieldKind(Enum):
    """Scalar kinds that metadata filters understand."""

    STRING = "string"
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    STRING_ARRAY = "string_array"


# Scalar fields that filters may name, with their kind. Vector fields are not filterable.
FILTERABLE_FIELDS: dict[str, FieldKind] = {
    "id": FieldKind.STRING,
    "path": FieldKind.STRING,
    "path_count": FieldKind.INT,
    "source": FieldKind.STRING,
    "tags": FieldKind.STRING_ARRAY,
    "format": FieldKind.STRING,
    "width": FieldKind.INT,
    "height": FieldKind.INT,
    "bytes": FieldKind.INT,
    "has_exif_date": FieldKind.BOOL,
    "exif_ts": FieldKind.INT,
    "camera_make": FieldKind.STRING,
    "camera_model": FieldKind.STRING,
    "has_gps": FieldKind.BOOL,
    "gps_lat": FieldKind.FLOAT,
    "gps_lon": FieldKind.FLOAT,
    "ahash": FieldKind.STRING,
    "dhash": FieldKind.STRING,
    "colorhash": FieldKind.STRING,
    "ingested_at": FieldKind.INT,
    "cluster": FieldKind.INT,
    "dup_of": FieldKind.STRING,
    "dup_hamming": FieldKind.INT,
}

SCALAR_FIELDS: tuple[str, ...] = (
    "phash_dihedral",
    "frame_codes",
    "patch_codes",
    "path",
    "paths",
    "path_count",
    "source",
    "tags",
    "format",
    "width",
    "height",
    "bytes",
    "has_exif_date",
    "exif_ts",
    "camera_make",
    "camera_model",
    "has_gps",
    "gps_lat",
    "gps_lon",
    "ahash",
    "dhash",
    "colorhash",
    "ingested_at",
    "cluster",
    "dup_of",
    "dup_hamming",
    "dup_cosine",
)


@dataclass(frozen=True)
class SchemaContract:
    """What a collection promises its readers; stored as JSON in the collection description."""

    schema_version: int
    clip_model: str | None  # None: hash-only collection, no ``clip`` field
    clip_dim: int | None
    phash_bits: int = PHASH_BITS
    phash_bit_order: str = PHASH_BIT_ORDER
    phash_metric: str = PHASH_METRIC
    clip_metric: str = CLIP_METRIC

    @classmethod
    def current(cls, clip_model: str | None, clip_dim: int | None) -> SchemaContract:
        return cls(SCHEMA_VERSION, clip_model, clip_dim if clip_model else None)

    def to_description(self, instance: str | None = None) -> str:
        """The description a collection is created with; ``instance`` names this one collection
        (a random id, so that caches keyed by it never outlive it: see :func:`instance_of`)."""
        payload: dict[str, object] = {"lookalike": asdict(self)}
        if instance is not None:
            payload["instance"] = instance
        return "lookalike images " + json.dumps(payload, sort_keys=True)

    @classmethod
    def from_description(cls, collection: str, description: str) -> SchemaContract:
        """Parse a collection description written by :meth:`to_description`."""
        _, _, payload = description.partition(" images ")
        try:
            fields = json.loads(payload)["lookalike"]
            return cls(**fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise SchemaMismatchError(
                f"collection {collection!r} exists but was not created by lookalike "
                "(no schema contract in its description); use another LOOKALIKE_COLLECTION"
            ) from exc

    @staticmethod
    def instance_of(description: str) -> str | None:
        """The instance id a collection was created with; None for collections made before
        instance ids existed. Milvus Lite numbers every collection 0, so Milvus's own id
        cannot tell a collection from one made later under the same name."""
        _, _, payload = description.partition(" images ")
        try:
            instance = json.loads(payload).get("instance")
        except (ValueError, AttributeError):
            return None
        return instance if isinstance(instance, str) else None

    def check_compatible(self, collection: str, wanted: SchemaContract) -> None:
        """Refuse to use a collection whose contract differs from what this process writes."""
        problems = []
        if self.schema_version != wanted.schema_version:
            problems.append(
                f"schema version {self.schema_version}, this lookalike writes "
                f"{wanted.schema_version} (run `lookalike migrate` to upgrade it in place)"
            )
        if self.clip_model != wanted.clip_model:
            problems.append(f"CLIP model {self.clip_model!r}, configured {wanted.clip_model!r}")
        if self.clip_dim != wanted.clip_dim:
            problems.append(f"CLIP dimension {self.clip_dim}, the model gives {wanted.clip_dim}")
        if problems:
            raise SchemaMismatchError(
                f"collection {collection!r} was created with " + "; ".join(problems) + ". "
                "Use the same LOOKALIKE_CLIP_MODEL, or another LOOKALIKE_COLLECTION "
                "(vectors of different models cannot be compared)"
            )


# Milvus Lite returns ARRAY fields very slowly in bulk (about a millisecond a row, growing with
# the batch), so bulk reads (searches, all-row scans) leave them out; ``path_count`` says which
# rows have more than one path, to fetch their ``paths`` by id.
ARRAY_FIELDS = frozenset({"paths", "tags"})


def phash_search_params(max_hamming: int) -> dict[str, Any]:
    """``search_params`` of a range search on ``phash`` that returns the rows within
    ``max_hamming`` bits, inclusive (Milvus's radius is exclusive)."""
    if not 0 <= max_hamming < PHASH_BITS:
        raise QueryError(f"max Hamming distance must be in 0..{PHASH_BITS - 1}")
    return {"metric_type": PHASH_METRIC, "params": {"radius": max_hamming + 1}}


def clip_search_params(ef: int = 64) -> dict[str, Any]:
    """``search_params`` of a search on ``clip``: cosine, HNSW's ``ef`` (at least ``limit``)."""
    return {"metric_type": CLIP_METRIC, "params": {"ef": ef}}
