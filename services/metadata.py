"""Facts about one decoded image: size, format, content hash and the few EXIF fields we index.

EXIF is untrusted input: every field that is missing or malformed becomes None (logged at debug
level); :func:`extract_metadata` never raises because of EXIF.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from PIL import ExifTags, Image, TiffImagePlugin

from services.decode import LoadedImage

logger = logging.getLogger(__name__)

_EXIF_DATETIME_FORMAT = "%Y:%m:%d %H:%M:%S"
_Tag = ExifTags.Base
_GPS = ExifTags.GPS
_EXIF_FIELDS = (_Tag.DateTimeOriginal, _Tag.DateTimeDigitized)
_GPS_FIELDS = (_GPS.GPSLatitude, _GPS.GPSLatitudeRef, _GPS.GPSLongitude, _GPS.GPSLongitudeRef)


@dataclass(frozen=True)
class ImageMetadata:
    """Indexed metadata of one image. ``bytes`` is the file size; ``sha256`` is hex.

    ``exif_datetime`` is naive, as the camera recorded it (EXIF has no reliable time zone).
    GPS coordinates are signed decimal degrees (south and west negative).
    """

    width: int
    height: int
    format: str
    bytes: int
    sha256: str
    exif_datetime: datetime | None
    camera_make: str | None
    camera_model: str | None
    gps_lat: float | None
    gps_lon: float | None


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 lower-case hex characters."""
    return hashlib.sha256(data).hexdigest()


def extract_metadata(loaded: LoadedImage) -> ImageMetadata:
    """Metadata of ``loaded``; EXIF fields are None when absent or malformed (never raises)."""
    exif = loaded.exif
    date_taken = make = model = None
    lat = lon = None
    if exif is not None:
        exif_ifd = _sub_ifd(exif, _Tag.ExifOffset, _EXIF_FIELDS, loaded.path)
        date_taken = _first_datetime(
            (exif_ifd.get(_Tag.DateTimeOriginal), exif_ifd.get(_Tag.DateTimeDigitized)),
            exif.get(_Tag.DateTime),
            loaded.path,
        )
        make = _text(exif.get(_Tag.Make))
        model = _text(exif.get(_Tag.Model))
        lat, lon = _gps(_sub_ifd(exif, _Tag.GPSInfo, _GPS_FIELDS, loaded.path), loaded.path)
    return ImageMetadata(
        width=loaded.width,
        height=loaded.height,
        format=loaded.format,
        bytes=len(loaded.data),
        sha256=sha256_hex(loaded.data),
        exif_datetime=date_taken,
        camera_make=make,
        camera_model=model,
        gps_lat=lat,
        gps_lon=lon,
    )


def _sub_ifd(exif: Image.Exif, tag: int, fields: tuple[int, ...], path: str) -> Mapping[int, Any]:
    """The ``fields`` of the sub-IFD ``tag`` (Exif or GPS) that are present and readable.

    PIL's ``get_ifd`` decodes every field of the IFD (maker notes, lens data, rationals by the
    dozen): on camera JPEGs that was two thirds of the time of this module. PIL's own TIFF
    directory reader is used here too, but only the wanted fields are decoded; a field that
    cannot be decoded is left out alone."""
    offset = exif.get(tag)
    if not isinstance(offset, int):  # no pointer, or PIL replaced it already
        return _whole_sub_ifd(exif, tag, path)
    try:
        directory = TiffImagePlugin.ImageFileDirectory_v2(exif.head, group=tag)
        exif.fp.seek(offset)
        directory.load(exif.fp)
    except Exception as exc:  # a broken offset or IFD must not cost the other fields
        logger.debug("ignoring unreadable EXIF IFD 0x%04x in %s: %s", tag, path, exc)
        return {}
    found: dict[int, Any] = {}
    for field in fields:
        if field not in directory:
            continue
        try:
            value = directory[field]
        except Exception as exc:
            logger.debug("ignoring unreadable EXIF field 0x%04x in %s: %s", field, path, exc)
            continue
        # As PIL's Exif does: a one-element tuple stands for its element.
        found[field] = value[0] if isinstance(value, tuple) and len(value) == 1 else value
    return found


def _whole_sub_ifd(exif: Image.Exif, tag: int, path: str) -> Mapping[int, Any]:
    try:
        return exif.get_ifd(tag)
    except Exception as exc:  # a broken offset or IFD must not cost the other fields
        logger.debug("ignoring unreadable EXIF IFD 0x%04x in %s: %s", tag, path, exc)
        return {}


def _first_datetime(preferred: tuple[Any, Any], fallback: Any, path: str) -> datetime | None:
    """The first parseable of DateTimeOriginal, DateTimeDigitized, DateTime."""
    for value in (*preferred, fallback):
        text = _text(value)
        if text is None:
            continue
        try:
            # Some cameras pad or append sub-second digits; the first 19 characters are the stamp.
            return datetime.strptime(text[:19], _EXIF_DATETIME_FORMAT)
        except ValueError:
            logger.debug("ignoring malformed EXIF date %r in %s", text, path)
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    cleaned = value.replace("\x00", "").strip()
    return cleaned or None


def _gps(gps: Mapping[int, Any], path: str) -> tuple[float | None, float | None]:
    if not gps:
        return None, None
    lat = _coordinate(gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef), "NS", 90.0)
    lon = _coordinate(gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef), "EW", 180.0)
    if lat is None or lon is None:
        logger.debug("ignoring incomplete or malformed GPS EXIF in %s: %r", path, dict(gps))
        return None, None
    return lat, lon


def _coordinate(value: Any, ref: Any, positive_negative: str, limit: float) -> float | None:
    """Degrees/minutes/seconds rationals and an N/S (or E/W) reference to signed degrees."""
    direction = _text(ref)
    if direction is None or direction.upper()[:1] not in positive_negative:
        return None
    try:
        parts = [float(part) for part in value]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not 1 <= len(parts) <= 3 or not all(math.isfinite(part) and part >= 0 for part in parts):
        return None
    parts += [0.0] * (3 - len(parts))
    degrees = parts[0] + parts[1] / 60.0 + parts[2] / 3600.0
    if degrees > limit:
        return None
    return -degrees if direction.upper()[:1] == positive_negative[1] else degrees
