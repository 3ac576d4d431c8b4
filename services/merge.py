"""What a keeper gains from the duplicates it replaces, and how to give it back.

When a group is resolved, the keeper's row takes what only the duplicates carried: their tags
(a union, the keeper's first), a source, an EXIF date, GPS and a camera where the keeper has none
(immich #12506). Each :class:`Gain` says what came from which duplicate, so an undo can take back
exactly that, and only while the keeper still holds the value it gained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from services.records import ImageRecord, exif_timestamp
from services.schema import MAX_TAGS


@dataclass(frozen=True)
class Gain:
    """The fields a keeper took from one duplicate (empty: it took nothing)."""

    tags: tuple[str, ...] = ()
    source: str = ""
    exif_datetime: datetime | None = None
    gps: tuple[float, float] | None = None
    camera: tuple[str, str] | None = None  # make, model: taken together, never mixed

    def __bool__(self) -> bool:
        return bool(self.tags or self.source or self.exif_datetime or self.gps or self.camera)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tags": list(self.tags),
            "source": self.source,
            "exif_ts": None if self.exif_datetime is None else exif_timestamp(self.exif_datetime),
            "gps": None if self.gps is None else list(self.gps),
            "camera": None if self.camera is None else list(self.camera),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Gain:
        stamp, gps, camera = data.get("exif_ts"), data.get("gps"), data.get("camera")
        return cls(
            tags=tuple(str(t) for t in data.get("tags") or ()),
            source=str(data.get("source") or ""),
            exif_datetime=(
                None
                if stamp is None
                else datetime.fromtimestamp(int(stamp), UTC).replace(tzinfo=None)
            ),
            gps=None if gps is None else (float(gps[0]), float(gps[1])),
            camera=None if camera is None else (str(camera[0]), str(camera[1])),
        )


def absorb(
    keeper: ImageRecord, duplicates: Sequence[ImageRecord]
) -> tuple[ImageRecord, dict[str, Gain]]:
    """``keeper`` with what ``duplicates`` carried and it lacks, and each duplicate's gain (by
    id). Tags and the first source, GPS and camera go in the duplicates' order; of several EXIF
    dates the oldest (a copy's date is at best the original's). Paths are not touched."""
    tags = list(keeper.tags)
    gains: dict[str, dict[str, Any]] = {d.id: {} for d in duplicates}
    for duplicate in duplicates:
        new = [t for t in duplicate.tags if t not in tags][: max(0, MAX_TAGS - len(tags))]
        tags += new
        if new:
            gains[duplicate.id]["tags"] = tuple(new)
    source = keeper.source
    if not source:
        donor = next((d for d in duplicates if d.source), None)
        if donor is not None:
            source = gains[donor.id]["source"] = donor.source
    moment = keeper.exif_datetime
    if moment is None:
        dated = [d for d in duplicates if d.exif_datetime is not None]
        if dated:
            donor = min(dated, key=lambda d: (d.exif_datetime, d.id))
            moment = gains[donor.id]["exif_datetime"] = donor.exif_datetime
    lat, lon = keeper.gps_lat, keeper.gps_lon
    if not keeper.has_gps:
        donor = next((d for d in duplicates if d.has_gps), None)
        if donor is not None and donor.gps_lat is not None and donor.gps_lon is not None:
            lat, lon = donor.gps_lat, donor.gps_lon
            gains[donor.id]["gps"] = (lat, lon)
    make, model = keeper.camera_make, keeper.camera_model
    if not (make or model):
        donor = next((d for d in duplicates if d.camera_make or d.camera_model), None)
        if donor is not None:
            make, model = gains[donor.id]["camera"] = (donor.camera_make, donor.camera_model)
    merged = replace(
        keeper,
        tags=tuple(tags),
        source=source,
        exif_datetime=moment,
        gps_lat=lat,
        gps_lon=lon,
        camera_make=make,
        camera_model=model,
    )
    return merged, {i: Gain(**fields) for i, fields in gains.items()}


def revert(keeper: ImageRecord, gains: Sequence[Gain]) -> ImageRecord:
    """``keeper`` without what it gained, field by field, where it still holds the gained value
    (a value changed since is someone's later edit, and stays)."""
    for gain in gains:
        lost = set(gain.tags)
        keeper = replace(
            keeper,
            tags=tuple(t for t in keeper.tags if t not in lost),
            source="" if gain.source and keeper.source == gain.source else keeper.source,
        )
        if gain.exif_datetime is not None and keeper.exif_datetime == gain.exif_datetime:
            keeper = replace(keeper, exif_datetime=None)
        if gain.gps is not None and (keeper.gps_lat, keeper.gps_lon) == gain.gps:
            keeper = replace(keeper, gps_lat=None, gps_lon=None)
        if gain.camera is not None and (keeper.camera_make, keeper.camera_model) == gain.camera:
            keeper = replace(keeper, camera_make="", camera_model="")
    return keeper
