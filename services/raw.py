"""Decode camera RAW files (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2) through libraw (rawpy).

The embedded preview is used when it is at least the size the caller needs (a draft, as for
JPEG); otherwise libraw renders the sensor data (at half size when that is still enough).
Either way the image comes back oriented as the camera was held, so a RAW and the JPEG of the
same shot hash alike. ``width``/``height`` are the full sensor-derived size after orientation.
EXIF comes from the RAW's own TIFF structure where it has one, else from the preview JPEG.
Every libraw failure is mapped by type to a :class:`~services.errors.DecodeError`.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rawpy
from PIL import Image

from services.discovery import RAW_SUFFIXES
from services.errors import DecodeError, ImageTooLargeError, UnsupportedImageError

logger = logging.getLogger(__name__)

# libraw's flip (dcraw's: bit 4 transposes, bit 2 flips rows, bit 1 flips columns) -> the
# transpose that shows the image upright; 5 and 6 are the quarter turns.
_FLIP_FIX: dict[int, Image.Transpose] = {
    1: Image.Transpose.FLIP_LEFT_RIGHT,
    2: Image.Transpose.FLIP_TOP_BOTTOM,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.TRANSPOSE,
    5: Image.Transpose.ROTATE_90,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
}
# EXIF orientation -> libraw flip, libraw's own table ("50132467"[orientation & 7]).
_EXIF_TO_FLIP = {1: 0, 2: 1, 3: 3, 4: 2, 5: 4, 6: 6, 7: 7, 8: 5}
_ORIENTATION_TAG = 0x0112
# ORF and RW2 are TIFF with their own magic number in place of 42; Pillow's EXIF reader
# wants 42, and nothing else in the header differs.
_TIFF_LIKE_MAGIC = {b"IIRO": b"II*\x00", b"IIRS": b"II*\x00", b"IIU\x00": b"II*\x00"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")


@dataclass(frozen=True)
class DecodedRaw:
    """A RAW file decoded: the upright RGB image, the full oriented size, kind and EXIF."""

    image: Image.Image
    width: int
    height: int
    format: str
    exif: Image.Exif | None
    from_preview: bool


def is_raw_name(name: str) -> bool:
    """Whether ``name`` ends in a camera RAW suffix (these files are taken by name)."""
    return Path(name).suffix.lower() in RAW_SUFFIXES


def decode_raw(
    data: bytes, name: str, *, max_pixels: int, draft_size: tuple[int, int] | None
) -> DecodedRaw:
    """Decode the RAW file ``data`` (named ``name``); ``draft_size`` as in services.decode.

    Raises DecodeError (or a subclass) naming ``name`` on any libraw failure.
    """
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            return _decode(raw, data, name, max_pixels, draft_size)
    except rawpy.LibRawError as exc:
        raise _mapped(exc, name) from exc
    except rawpy.NotSupportedError as exc:
        raise DecodeError(name, f"cannot read RAW file: {_libraw_reason(exc)}") from exc


def _decode(
    raw: rawpy.RawPy,
    data: bytes,
    name: str,
    max_pixels: int,
    draft_size: tuple[int, int] | None,
) -> DecodedRaw:
    sizes = raw.sizes
    if sizes.width * sizes.height > max_pixels:
        raise ImageTooLargeError(
            name,
            f"{sizes.width}x{sizes.height} = {sizes.width * sizes.height} pixels is over the "
            f"limit of {max_pixels} (LOOKALIKE_MAX_IMAGE_PIXELS)",
        )
    width, height = (sizes.height, sizes.width) if sizes.flip & 4 else (sizes.width, sizes.height)
    kind = Path(name).suffix.lstrip(".").upper() or "RAW"
    preview = _preview(raw, name, sizes.width, sizes.height, sizes.flip, max_pixels)
    exif = _container_exif(data, name)
    if preview is not None:
        if exif is None:
            exif = _exif_of(preview, name)
        if _covers(preview.size, draft_size or (width, height)):
            return DecodedRaw(preview, width, height, kind, exif, from_preview=True)
    half = draft_size is not None and _covers((width // 2, height // 2), draft_size)
    # postprocess applies the flip itself; the as-shot white balance is what the camera saw.
    rendered = raw.postprocess(use_camera_wb=True, half_size=half, output_bps=8)
    image = Image.fromarray(np.ascontiguousarray(rendered), "RGB")
    return DecodedRaw(image, width, height, kind, exif, from_preview=False)


def _preview(
    raw: rawpy.RawPy, name: str, raw_width: int, raw_height: int, flip: int, max_pixels: int
) -> Image.Image | None:
    """The largest embedded preview, upright and RGB, or None when there is none usable."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        assert isinstance(thumb.data, bytes)
        with Image.open(io.BytesIO(thumb.data)) as opened:
            if opened.width * opened.height > max_pixels:
                return None
            opened.load()
            own_orientation = opened.getexif().get(_ORIENTATION_TAG, 1)
            image = opened.convert("RGB")
    else:
        pixels = np.asarray(thumb.data, dtype=np.uint8)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        image = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
        own_orientation = 1
    if (image.width >= image.height) != (raw_width >= raw_height):
        logger.debug("the preview of %s is stored upright already", name)
        return image
    if flip == 0:  # libraw knows no orientation; the preview may carry its own
        flip = _EXIF_TO_FLIP.get(own_orientation, 0) if isinstance(own_orientation, int) else 0
    return image.transpose(_FLIP_FIX[flip]) if flip in _FLIP_FIX else image


def _covers(size: tuple[int, int], wanted: tuple[int, int]) -> bool:
    return size[0] >= wanted[0] and size[1] >= wanted[1]


def _container_exif(data: bytes, name: str) -> Image.Exif | None:
    """EXIF read from the RAW's own TIFF structure (DNG, NEF, ARW, CR2, ORF, RW2, ...)."""
    head = data[:4]
    if head in _TIFF_LIKE_MAGIC:
        data = _TIFF_LIKE_MAGIC[head] + data[4:]
    elif head not in _TIFF_MAGIC:
        return None  # CR3 (ISO media) and RAF: the preview's EXIF is all there is
    exif = Image.Exif()
    try:
        exif.load(data)
    except Exception as exc:  # malformed EXIF must not cost us the image
        logger.debug("ignoring unreadable EXIF in %s: %s", name, exc)
        return None
    return exif if len(exif) else None


def _exif_of(image: Image.Image, name: str) -> Image.Exif | None:
    try:
        exif = image.getexif()
    except Exception as exc:
        logger.debug("ignoring unreadable preview EXIF in %s: %s", name, exc)
        return None
    return exif if len(exif) else None


def _mapped(exc: rawpy.LibRawError, name: str) -> DecodeError:
    """Our error for a libraw failure, chosen by its type; libraw's own words are appended."""
    said = _libraw_reason(exc)
    if isinstance(exc, rawpy.LibRawFileUnsupportedError):
        return UnsupportedImageError(
            name,
            f"cannot read RAW file: not a RAW format libraw knows, or a damaged header "
            f"(libraw: {said})",
        )
    if isinstance(exc, rawpy.LibRawIOError):
        return DecodeError(name, f"cannot read RAW file: truncated or unreadable (libraw: {said})")
    if isinstance(exc, rawpy.LibRawDataError):
        return DecodeError(name, f"cannot read RAW file: corrupt RAW data (libraw: {said})")
    if isinstance(exc, rawpy.LibRawTooBigError):
        return ImageTooLargeError(name, f"cannot read RAW file: too large (libraw: {said})")
    if isinstance(exc, rawpy.LibRawUnsufficientMemoryError | rawpy.LibRawMemPoolOverflowError):
        return DecodeError(name, f"cannot read RAW file: out of memory (libraw: {said})")
    return DecodeError(name, f"cannot read RAW file: {said}")


def _libraw_reason(exc: Exception) -> str:
    """libraw's message: rawpy passes it as bytes, whose repr would read b'...'."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, bytes):
        return first.decode("utf-8", errors="replace")
    return str(first) if first is not None else type(exc).__name__
