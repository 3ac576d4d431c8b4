"""Widgets several pages share: metadata filters generated from the schema, and image grids."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

import streamlit as st

from services.filters import Condition, between, date_range, eq, has_gps, has_tag, parse_where
from services.records import ImageRecord
from services.schema import FILTERABLE_FIELDS, FieldKind
from ui import runtime

COLUMNS = 5
_PLACEHOLDER = "no thumbnail (file unreadable or moved)"


def filter_widgets(key: str) -> list[Condition]:
    """The metadata filter, as widgets for the common fields plus free ``--where`` clauses for
    any filterable field of the schema; returns typed conditions (invalid ones raise
    FilterError, shown by the page, before anything reaches Milvus)."""
    conditions: list[Condition] = []
    with st.expander("Metadata filter", expanded=False):
        left, right = st.columns(2)
        source = left.text_input("Source", key=f"{key}-source")
        tags = right.text_input("Tags (comma-separated, all required)", key=f"{key}-tags")
        camera = left.text_input("Camera make", key=f"{key}-camera")
        gps = right.selectbox("Has GPS", ["any", "yes", "no"], key=f"{key}-gps")
        min_width = left.number_input("Min width (px)", min_value=0, step=100, key=f"{key}-w")
        min_height = right.number_input("Min height (px)", min_value=0, step=100, key=f"{key}-h")
        cluster = left.number_input(
            "Cluster (-1: any)", min_value=-1, value=-1, step=1, key=f"{key}-cluster"
        )
        dated = right.checkbox("EXIF date range", key=f"{key}-dated")
        if dated:
            start, end = right.columns(2)
            first = start.date_input("From", value=date(2000, 1, 1), key=f"{key}-from")
            last = end.date_input("To", value=date.today(), key=f"{key}-to")
            conditions += date_range(first, last)
        fields = ", ".join(sorted(f for f in FILTERABLE_FIELDS if f not in _HASH_FIELDS))
        clauses = st.text_area(
            "More conditions, one per line (FIELD OP VALUE)",
            key=f"{key}-where",
            placeholder="format in JPEG,PNG\nbytes < 500000",
            help=f"Operators: = != < <= > >= ~ in. Fields: {fields}, tag, date.",
        )
    if source.strip():
        conditions.append(eq("source", source.strip()))
    conditions += [has_tag(t.strip()) for t in tags.split(",") if t.strip()]
    if camera.strip():
        conditions.append(eq("camera_make", camera.strip()))
    if gps != "any":
        conditions.append(has_gps(gps == "yes"))
    conditions += between("width", int(min_width) or None, None)
    conditions += between("height", int(min_height) or None, None)
    if cluster >= 0:
        conditions.append(eq("cluster", int(cluster)))
    for line in clauses.splitlines():
        if line.strip():
            conditions += parse_where(line.strip())
    return conditions


_HASH_FIELDS = {
    name for name, kind in FILTERABLE_FIELDS.items() if kind is FieldKind.STRING and "hash" in name
}


@dataclass(frozen=True)
class Tile:
    """One image of a grid: the stored row, a short caption, details shown on hover."""

    record: ImageRecord
    caption: str
    details: str = ""


def describe(record: ImageRecord) -> str:
    """Metadata of a row, one fact per line (shown on hover)."""
    facts = [
        f"path: {record.path}",
        f"id: {record.id[:16]}…",
        f"{record.width}x{record.height} {record.format}, {record.bytes:,} bytes",
    ]
    if len(record.all_paths) > 1:
        facts.append(f"also at {len(record.all_paths) - 1} other path(s)")
    if record.source:
        facts.append(f"source: {record.source}")
    if record.tags:
        facts.append("tags: " + ", ".join(record.tags))
    if record.exif_datetime:
        facts.append(f"taken: {record.exif_datetime:%Y-%m-%d %H:%M}")
    if record.camera_make or record.camera_model:
        facts.append(f"camera: {record.camera_make} {record.camera_model}".strip())
    if record.has_gps:
        facts.append(f"GPS: {record.gps_lat:.5f}, {record.gps_lon:.5f}")
    if record.cluster is not None and record.cluster >= 0:
        facts.append(f"cluster: {record.cluster}")
    return "  \n".join(facts)


def image_grid(
    tiles: Sequence[Tile],
    *,
    key: str,
    action: tuple[str, Callable[[ImageRecord], None]] | None = None,
    columns: int = COLUMNS,
) -> None:
    """Thumbnails in rows of ``columns``; ``action`` adds a button (label, callback) to each."""
    thumbs = runtime.thumbnails()
    for start in range(0, len(tiles), columns):
        cells = st.columns(columns)
        row = tiles[start : start + columns]
        for index, (cell, tile) in enumerate(zip(cells, row, strict=False), start=start):
            with cell:
                thumb = thumbs.path_for(tile.record.id, tile.record.all_paths)
                if thumb is None:
                    st.caption(_PLACEHOLDER)
                else:
                    st.image(str(thumb), width="stretch")
                st.caption(tile.caption, help=tile.details or describe(tile.record))
                if action is not None:
                    label, callback = action
                    st.button(
                        label,
                        key=f"{key}-{index}",
                        on_click=callback,
                        args=(tile.record,),
                    )
