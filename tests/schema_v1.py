"""Collections of schema versions 1 and 2, made as lookalike made them before version 3 (995ca07's
``MilvusStore._create_collection`` for version 1, the same with ``frame_codes`` after
``phash_dihedral`` for version 2; Milvus Lite's index profile), for the migration tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from services.records import ImageRecord, binary_vector, to_row
from services.schema import (
    DIHEDRAL_VARIANTS,
    MAX_PATH_LENGTH,
    MAX_PATHS,
    MAX_SOURCE_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_TEXT_LENGTH,
    PHASH_BITS,
    SchemaContract,
)
from services.store import milvus_client

# The scalar fields of version 1, in their order then (version 2 added frame_codes).
V1_SCALARS = (
    "phash_dihedral", "path", "paths", "path_count", "source", "tags", "format", "width",
    "height", "bytes", "has_exif_date", "exif_ts", "camera_make", "camera_model", "has_gps",
    "gps_lat", "gps_lon", "ahash", "dhash", "colorhash", "ingested_at", "cluster", "dup_of",
    "dup_hamming", "dup_cosine",
)  # fmt: skip
V2_SCALARS = (V1_SCALARS[0], "frame_codes", *V1_SCALARS[1:])
SCALARS = {1: V1_SCALARS, 2: V2_SCALARS}
_VARCHAR = {
    "path": MAX_PATH_LENGTH,
    "source": MAX_SOURCE_LENGTH,
    "format": 16,
    "camera_make": MAX_TEXT_LENGTH,
    "camera_model": MAX_TEXT_LENGTH,
    "ahash": 32,
    "dhash": 32,
    "colorhash": 32,
    "dup_of": 64,
    "phash_dihedral": 16 * DIHEDRAL_VARIANTS,
    "frame_codes": 64,
}


def create_v1_collection(
    uri: str, name: str, *, clip_model: str | None, clip_dim: int | None, version: int = 1
) -> str:
    """Create ``name`` with the schema and contract of ``version`` (1 or 2); returns its
    instance id."""
    from pymilvus import DataType

    instance = uuid.uuid4().hex
    contract = SchemaContract(version, clip_model, clip_dim)
    client = milvus_client(uri)
    try:
        schema = client.create_schema(
            auto_id=False, enable_dynamic_field=False, description=contract.to_description(instance)
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("phash", DataType.BINARY_VECTOR, dim=PHASH_BITS)
        if clip_dim is not None:
            schema.add_field("clip", DataType.FLOAT_VECTOR, dim=clip_dim)
        for field in SCALARS[version]:
            dtype, kwargs = _field_kwargs(field)
            schema.add_field(field, dtype, **kwargs)
        index = client.prepare_index_params()
        index.add_index("phash", index_type="BIN_FLAT", metric_type="HAMMING")
        if clip_dim is not None:
            index.add_index("clip", index_type="FLAT", metric_type="COSINE")
        client.create_collection(
            name, schema=schema, index_params=index, consistency_level="Strong"
        )
    finally:
        client.close()
    return instance


def _field_kwargs(field: str) -> tuple[Any, dict[str, Any]]:
    from pymilvus import DataType

    if field in _VARCHAR:
        return DataType.VARCHAR, {"max_length": _VARCHAR[field]}
    if field in {"paths", "tags"}:
        capacity, length = (
            (MAX_PATHS, MAX_PATH_LENGTH) if field == "paths" else (MAX_TAGS, MAX_TAG_LENGTH)
        )
        return DataType.ARRAY, {
            "element_type": DataType.VARCHAR,
            "max_capacity": capacity,
            "max_length": length,
        }
    if field in {"has_exif_date", "has_gps"}:
        return DataType.BOOL, {}
    if field in {"gps_lat", "gps_lon"}:
        return DataType.DOUBLE, {}
    if field == "dup_cosine":
        return DataType.FLOAT, {}
    if field in {"width", "height", "cluster", "dup_hamming", "path_count"}:
        return DataType.INT32, {}
    return DataType.INT64, {}


def insert_v1(
    uri: str, name: str, records: Sequence[ImageRecord], *, with_clip: bool, version: int = 1
) -> None:
    """Write ``records`` as rows of ``version`` (1: no ``frame_codes``; neither: no
    ``patch_codes``)."""
    rows = []
    for record in records:
        row = to_row(record, with_clip=with_clip, max_paths=MAX_PATHS)
        rows.append(
            {k: v for k, v in row.items() if k in {"id", "phash", "clip", *SCALARS[version]}}
        )
    client = milvus_client(uri)
    try:
        client.insert(name, rows)
    finally:
        client.close()


def read_rows(uri: str, name: str) -> dict[str, dict[str, Any]]:
    """Every row of ``name``, every field, as Milvus returns it (``phash`` as bytes)."""
    client = milvus_client(uri)
    try:
        fields = [f["name"] for f in client.describe_collection(name)["fields"]]
        client.load_collection(name)
        iterator = client.query_iterator(name, batch_size=100, filter="", output_fields=fields)
        rows: dict[str, dict[str, Any]] = {}
        while batch := iterator.next():
            for row in batch:
                row = dict(row)
                row["phash"] = binary_vector(row["phash"])
                rows[str(row["id"])] = row
        iterator.close()
    finally:
        client.close()
    return rows
