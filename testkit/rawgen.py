"""Camera RAW files made locally for tests: a minimal DNG writer (no downloads, no encoder).

The DNG holds the Bayer mosaic (RGGB, 16-bit, uncompressed) of an RGB picture, with a colour
matrix that makes the camera space linear sRGB, so libraw renders back roughly the same
picture. Optionally IFD0 carries a preview of the picture (baseline JPEG, or an uncompressed
RGB bitmap), as cameras write it, with the raw image in a SubIFD; and EXIF: Make, Model,
Orientation, DateTime in IFD0, DateTimeOriginal in the EXIF IFD, a GPS IFD.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import numpy as np
from PIL import Image

_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_FORMATS = {_BYTE: "B", _SHORT: "H", _LONG: "I"}
# XYZ (D65) -> linear sRGB: as the DNG ColorMatrix1 it makes the "camera" linear sRGB.
_XYZ_TO_SRGB = (
    (3.2406, -1.5372, -0.4986),
    (-0.9689, 1.8758, 0.0415),
    (0.0557, -0.2040, 1.0570),
)
_WHITE_LEVEL = 65535

PreviewKind = Literal["jpeg", "bitmap"]
_Entry = tuple[int, int, str | list[int] | list[float]]


@dataclass(frozen=True)
class RawExif:
    """The EXIF a test DNG carries; ``gps`` is (lat, lon) in signed decimal degrees."""

    make: str = "Lookalike"
    model: str = "Test DNG"
    taken: datetime | None = None
    gps: tuple[float, float] | None = None


def bayer_mosaic(picture: Image.Image) -> np.ndarray:
    """The RGGB mosaic (uint16, linear light) a sensor would record of the sRGB ``picture``."""
    srgb = np.asarray(picture.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    values = np.rint(linear * _WHITE_LEVEL).astype(np.uint16)
    mosaic = values[:, :, 1].copy()  # green everywhere, then red and blue sites
    mosaic[0::2, 0::2] = values[0::2, 0::2, 0]
    mosaic[1::2, 1::2] = values[1::2, 1::2, 2]
    return mosaic


def make_dng(
    picture: Image.Image,
    *,
    preview: PreviewKind | None = "jpeg",
    preview_size: tuple[int, int] | None = None,
    orientation: int = 1,
    exif: RawExif | None = None,
) -> bytes:
    """A DNG of ``picture`` (its size must be even), stored unrotated with ``orientation``.

    ``preview_size`` (width, height) scales the preview; by default it is the picture's size.
    """
    width, height = picture.size
    if width % 2 or height % 2:
        raise ValueError(f"a Bayer mosaic needs an even size, not {width}x{height}")
    mosaic = bayer_mosaic(picture).astype("<u2").tobytes()
    exif = exif or RawExif()
    # The pixel data goes last, as cameras write it, so a truncated file keeps its headers:
    # lay out everything else once to learn where the pixels start, then for real.
    head = _layout(picture, preview, preview_size, orientation, exif, 0, len(mosaic))
    head = _layout(picture, preview, preview_size, orientation, exif, len(head), len(mosaic))
    return head + mosaic


def _layout(
    picture: Image.Image,
    preview: PreviewKind | None,
    preview_size: tuple[int, int] | None,
    orientation: int,
    exif: RawExif,
    raw_offset: int,
    raw_length: int,
) -> bytes:
    writer = _TiffWriter()
    raw_tags = _raw_tags(*picture.size, raw_offset, raw_length)
    ifd0: list[_Entry] = [
        (271, _ASCII, exif.make),
        (272, _ASCII, exif.model),
        (274, _SHORT, [orientation]),
        (50706, _BYTE, [1, 4, 0, 0]),  # DNGVersion
        (50707, _BYTE, [1, 1, 0, 0]),  # DNGBackwardVersion
        (50708, _ASCII, f"{exif.make} {exif.model}"),  # UniqueCameraModel
        (50721, _SRATIONAL, [v for row in _XYZ_TO_SRGB for v in row]),  # ColorMatrix1
        (50728, _RATIONAL, [1.0, 1.0, 1.0]),  # AsShotNeutral
        (50778, _SHORT, [21]),  # CalibrationIlluminant1: D65
    ]
    if exif.taken is not None:
        stamp = exif.taken.strftime("%Y:%m:%d %H:%M:%S")
        ifd0.append((306, _ASCII, stamp))
        ifd0.append((34665, _LONG, [writer.ifd([(36867, _ASCII, stamp)])]))
    if exif.gps is not None:
        ifd0.append((34853, _LONG, [writer.ifd(_gps_tags(*exif.gps))]))
    if preview is None:
        ifd0 += raw_tags
    else:
        shown = picture.convert("RGB")
        if preview_size is not None:
            shown = shown.resize(preview_size, Image.Resampling.LANCZOS)
        ifd0 += _preview_tags(writer, shown, preview)
        ifd0.append((330, _LONG, [writer.ifd(raw_tags)]))  # SubIFDs: the raw image
    return writer.finish(ifd0)


def _raw_tags(width: int, height: int, offset: int, length: int) -> list[_Entry]:
    return [
        (254, _LONG, [0]),  # NewSubfileType: the main image
        (256, _LONG, [width]),
        (257, _LONG, [height]),
        (258, _SHORT, [16]),
        (259, _SHORT, [1]),  # uncompressed
        (262, _SHORT, [32803]),  # PhotometricInterpretation: CFA
        (273, _LONG, [offset]),
        (277, _SHORT, [1]),
        (278, _LONG, [height]),
        (279, _LONG, [length]),
        (284, _SHORT, [1]),
        (33421, _SHORT, [2, 2]),  # CFARepeatPatternDim
        (33422, _BYTE, [0, 1, 1, 2]),  # CFAPattern: RGGB
        (50710, _BYTE, [0, 1, 2]),  # CFAPlaneColor
        (50711, _SHORT, [1]),  # CFALayout: rectangular
        (50714, _LONG, [0]),  # BlackLevel
        (50717, _LONG, [_WHITE_LEVEL]),  # WhiteLevel
    ]


def _preview_tags(writer: _TiffWriter, shown: Image.Image, kind: PreviewKind) -> list[_Entry]:
    if kind == "jpeg":
        buffer = io.BytesIO()
        shown.save(buffer, "JPEG", quality=92)
        data, compression, photometric = buffer.getvalue(), 7, 6  # JPEG, YCbCr
    else:
        data, compression, photometric = shown.tobytes(), 1, 2  # uncompressed RGB
    return [
        (254, _LONG, [1]),  # NewSubfileType: a reduced-resolution preview
        (256, _LONG, [shown.width]),
        (257, _LONG, [shown.height]),
        (258, _SHORT, [8, 8, 8]),
        (259, _SHORT, [compression]),
        (262, _SHORT, [photometric]),
        (273, _LONG, [writer.blob(data)]),
        (277, _SHORT, [3]),
        (278, _LONG, [shown.height]),
        (279, _LONG, [len(data)]),
        (284, _SHORT, [1]),
    ]


def _gps_tags(lat: float, lon: float) -> list[_Entry]:
    def dms(value: float) -> list[float]:
        degrees = int(abs(value))
        minutes = int((abs(value) - degrees) * 60)
        return [float(degrees), float(minutes), (abs(value) - degrees - minutes / 60) * 3600]

    return [
        (1, _ASCII, "N" if lat >= 0 else "S"),
        (2, _RATIONAL, dms(lat)),
        (3, _ASCII, "E" if lon >= 0 else "W"),
        (4, _RATIONAL, dms(lon)),
    ]


class _TiffWriter:
    """Little-endian TIFF: blobs and sub-IFDs first, IFD0 last (the header points to it)."""

    def __init__(self) -> None:
        self._buffer = bytearray(b"II*\x00\x00\x00\x00\x00")

    def blob(self, data: bytes) -> int:
        offset = len(self._buffer)
        self._buffer += data
        if len(self._buffer) % 2:
            self._buffer += b"\x00"
        return offset

    def ifd(self, entries: list[_Entry]) -> int:
        offset = len(self._buffer)
        data_at = offset + 2 + 12 * len(entries) + 4
        table, extra = bytearray(struct.pack("<H", len(entries))), bytearray()
        for tag, kind, value in sorted(entries, key=lambda entry: entry[0]):
            count, packed = _pack(kind, value)
            if len(packed) <= 4:
                table += struct.pack("<HHI", tag, kind, count) + packed.ljust(4, b"\x00")
            else:
                table += struct.pack("<HHII", tag, kind, count, data_at + len(extra))
                extra += packed + b"\x00" * (len(packed) % 2)
        self._buffer += table + struct.pack("<I", 0) + extra
        return offset

    def finish(self, ifd0: list[_Entry]) -> bytes:
        struct.pack_into("<I", self._buffer, 4, self.ifd(ifd0))
        return bytes(self._buffer)


def _pack(kind: int, value: str | list[int] | list[float]) -> tuple[int, bytes]:
    if isinstance(value, str):
        data = value.encode("ascii") + b"\x00"
        return len(data), data
    if kind in (_RATIONAL, _SRATIONAL):
        code = "I" if kind == _RATIONAL else "i"
        parts = [(round(v * 10000), 10000) for v in value]
        return len(parts), b"".join(struct.pack(f"<{code}{code}", *p) for p in parts)
    ints = [int(v) for v in value]
    return len(ints), struct.pack(f"<{len(ints)}{_FORMATS[kind]}", *ints)
