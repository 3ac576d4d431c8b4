"""services.metadata: size, sha256 and the EXIF fields we index; malformed EXIF gives None."""

from __future__ import annotations

import hashlib
import io
import struct
from datetime import datetime
from fractions import Fraction
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin

from services.decode import LoadedImage, load_image, load_image_bytes
from services.errors import DecodeError
from services.metadata import ImageMetadata, extract_metadata, sha256_hex
from testkit.imagegen import make_photo_like

LIMIT = 50_000_000
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, DATETIME, ORIENTATION = 0x010F, 0x0110, 0x0132, 0x0112
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004


def rational(value: float | Fraction) -> TiffImagePlugin.IFDRational:
    fraction = Fraction(value).limit_denominator(10_000)
    return TiffImagePlugin.IFDRational(fraction.numerator, fraction.denominator)


def dms(degrees: int, minutes: int, seconds: float) -> tuple[TiffImagePlugin.IFDRational, ...]:
    return (rational(degrees), rational(minutes), rational(seconds))


def exif_with(
    ifd0: dict[int, object] | None = None,
    exif_ifd: dict[int, object] | None = None,
    gps: dict[int, object] | None = None,
) -> Image.Exif:
    exif = Image.Exif()
    for tag, value in (ifd0 or {}).items():
        exif[tag] = value
    if exif_ifd:
        exif.get_ifd(EXIF_IFD).update(exif_ifd)
    if gps:
        exif.get_ifd(GPS_IFD).update(gps)
    return exif


def load_with_exif(exif: Image.Exif, image_format: str = "JPEG") -> LoadedImage:
    buffer = io.BytesIO()
    make_photo_like(3, (64, 48)).save(buffer, image_format, exif=exif)
    return load_image_bytes(buffer.getvalue(), f"exif.{image_format.lower()}", max_pixels=LIMIT)


def test_basic_fields_and_sha256(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    make_photo_like(1, (70, 50)).save(path, "PNG")
    metadata = extract_metadata(load_image(path, max_pixels=LIMIT))
    data = path.read_bytes()
    assert metadata == ImageMetadata(
        width=70,
        height=50,
        format="PNG",
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        exif_datetime=None,
        camera_make=None,
        camera_model=None,
        gps_lat=None,
        gps_lon=None,
    )


def test_sha256_hex_equals_hashlib() -> None:
    for data in (b"", b"abc", bytes(range(256)) * 100):
        assert sha256_hex(data) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP"])
def test_exif_date_camera_and_gps_read_back(image_format: str) -> None:
    exif = exif_with(
        ifd0={
            MAKE: "Canon\x00",
            MODEL: "  EOS 5D Mark IV \x00\x00",
            DATETIME: "2021:01:01 00:00:00",
        },
        exif_ifd={
            DATETIME_ORIGINAL: "2019:12:31 23:59:58",
            DATETIME_DIGITIZED: "2020:06:01 12:00:00",
        },
        gps={1: "N", 2: dms(48, 51, 29.5), 3: "W", 4: dms(2, 17, 40.25)},
    )
    metadata = extract_metadata(load_with_exif(exif, image_format))
    assert metadata.format == image_format
    assert metadata.exif_datetime == datetime(2019, 12, 31, 23, 59, 58)
    assert metadata.camera_make == "Canon"
    assert metadata.camera_model == "EOS 5D Mark IV"
    assert metadata.gps_lat == pytest.approx(48 + 51 / 60 + 29.5 / 3600, abs=1e-6)
    assert metadata.gps_lon == pytest.approx(-(2 + 17 / 60 + 40.25 / 3600), abs=1e-6)


def test_south_east_signs() -> None:
    exif = exif_with(gps={1: "S", 2: dms(33, 52, 4.0), 3: "E", 4: dms(151, 12, 26.0)})
    metadata = extract_metadata(load_with_exif(exif))
    assert metadata.gps_lat is not None and metadata.gps_lat < 0
    assert metadata.gps_lon is not None and metadata.gps_lon > 151


@pytest.mark.parametrize(
    ("exif_ifd", "ifd0", "expected"),
    [
        (
            {DATETIME_DIGITIZED: "2020:06:01 12:00:00"},
            {DATETIME: "2021:01:01 00:00:00"},
            datetime(2020, 6, 1, 12),
        ),
        ({}, {DATETIME: "2021:01:01 00:00:00"}, datetime(2021, 1, 1)),
        (
            {DATETIME_ORIGINAL: "0000:00:00 00:00:00"},
            {DATETIME: "2021:01:01 00:00:00"},
            datetime(2021, 1, 1),
        ),
        ({DATETIME_ORIGINAL: "2018:02:03 04:05:06.123"}, {}, datetime(2018, 2, 3, 4, 5, 6)),
        ({DATETIME_ORIGINAL: "not a date"}, {}, None),
        ({DATETIME_ORIGINAL: "    :  :     :  :  "}, {DATETIME: "2021:13:45 99:00:00"}, None),
    ],
)
def test_datetime_fallbacks_and_malformed(
    exif_ifd: dict[int, object], ifd0: dict[int, object], expected: datetime | None
) -> None:
    exif = exif_with(ifd0={MAKE: "X", **ifd0}, exif_ifd=exif_ifd)
    assert extract_metadata(load_with_exif(exif)).exif_datetime == expected


@pytest.mark.parametrize(
    "gps",
    [
        {1: "X", 2: dms(10, 0, 0), 3: "E", 4: dms(10, 0, 0)},  # bad reference
        {1: "N", 2: dms(10, 0, 0)},  # longitude missing
        {1: "N", 2: dms(100, 0, 0), 3: "E", 4: dms(10, 0, 0)},  # latitude over 90°
        {1: "N", 2: (*dms(10, 0, 0), rational(5)), 3: "E", 4: dms(10, 0, 0)},  # 4 parts
        {1: "N", 2: (TiffImagePlugin.IFDRational(1, 0),) * 3, 3: "E", 4: dms(10, 0, 0)},  # x/0
    ],
    ids=["bad-ref", "no-lon", "lat-over-90", "four-parts", "zero-denominator"],
)
def test_malformed_gps_gives_none(gps: dict[int, object]) -> None:
    metadata = extract_metadata(load_with_exif(exif_with(ifd0={MAKE: "X"}, gps=gps)))
    assert (metadata.gps_lat, metadata.gps_lon) == (None, None)
    assert metadata.camera_make == "X"  # the rest still comes through


def test_empty_or_non_text_camera_fields() -> None:
    metadata = extract_metadata(load_with_exif(exif_with(ifd0={MAKE: "\x00\x00 ", MODEL: "   "})))
    assert (metadata.camera_make, metadata.camera_model) == (None, None)


def jpeg_with_app1(payload: bytes) -> bytes:
    """A valid JPEG with a hand-made APP1 segment inserted after SOI."""
    buffer = io.BytesIO()
    make_photo_like(4, (32, 32)).save(buffer, "JPEG")
    data = buffer.getvalue()
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment + data[2:]


# Pillow reads a JPEG's EXIF while opening it and *warns* about corrupt EXIF. In production the
# warning is only reported and the image decodes; the suite turns warnings into errors, so these
# tests restore the production behaviour for that one warning.
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
@pytest.mark.parametrize(
    "payload",
    [
        b"Exif\x00\x00" + b"garbage that is no TIFF header",
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + bytes(20),  # 65535 entries, cut short
        b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x88\x25\x00\x04\x00\x00\x00\x01\x7f\xff\xff\xf0",
    ],
    ids=["no-tiff", "entry-count-overflow", "gps-offset-out-of-file"],
)
def test_corrupt_exif_never_raises(payload: bytes) -> None:
    loaded = load_image_bytes(jpeg_with_app1(payload), "bad-exif.jpg", max_pixels=LIMIT)
    metadata = extract_metadata(loaded)
    assert (metadata.width, metadata.height) == (32, 32)
    assert metadata.exif_datetime is None
    assert (metadata.gps_lat, metadata.gps_lon) == (None, None)


def test_orientation_swaps_reported_size() -> None:
    loaded = load_with_exif(exif_with(ifd0={ORIENTATION: 8}))
    metadata = extract_metadata(loaded)
    assert (metadata.width, metadata.height) == (48, 64)


def test_pillow_warning_raised_as_error_is_still_a_typed_error() -> None:
    # Where warnings are errors (this suite), Pillow's corrupt-EXIF warning must not escape raw.
    data = jpeg_with_app1(b"Exif\x00\x00II*\x00\x08\x00\x00\x00\xff\xff" + bytes(20))
    with pytest.raises(DecodeError, match="Corrupt EXIF"):
        load_image_bytes(data, "bad-exif.jpg", max_pixels=LIMIT)
