"""Decode one image file into an RGB Pillow image: the one place lookalike opens images.

Contract of :func:`load_image` / :func:`load_image_bytes`:

- the file is read once; its raw bytes come back in :attr:`LoadedImage.data` (for sha256);
- the image is fully decoded inside the guard, so truncation is detected here, not later;
- every mode is normalised to 8-bit RGB (alpha composited over white, 16-bit scaled, not
  clipped), EXIF orientation is applied, and animated images give their first frame;
- camera RAW files (by name: services.discovery.RAW_SUFFIXES) go through services.raw, which
  gives the same contract (``format`` is the RAW kind, e.g. ``NEF``);
- images with more than ``max_pixels`` pixels are refused from their header, before any pixel
  is decoded;
- every failure is a :class:`~services.errors.DecodeError` (or subclass) naming the file and the
  reason; no Pillow or OS exception escapes.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from services.errors import DecodeError, ImageTooLargeError, UnsupportedImageError
from services.raw import decode_raw, is_raw_name

logger = logging.getLogger(__name__)

_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that undoes it (the same table as ImageOps.exif_transpose).
_ORIENTATION_FIX: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (_PNG_SIGNATURE, "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)

_heif_lock = threading.Lock()
_heif_state: bool | None = None  # None: not tried yet; True/False: pillow-heif registered or absent


@dataclass(frozen=True)
class LoadedImage:
    """One decoded image and what was learnt while decoding it.

    ``width``/``height`` are the full-resolution size after EXIF orientation, even when ``image``
    was decoded smaller through a JPEG draft. ``exif`` is None when the file has no EXIF or it
    could not be parsed.
    """

    path: str
    data: bytes
    image: Image.Image
    width: int
    height: int
    format: str
    exif: Image.Exif | None


def load_image(
    path: str | Path, *, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> LoadedImage:
    """Read and decode the image file at ``path``; see the module docstring for the contract.

    ``draft_size``: the smallest size the caller needs; JPEGs at least twice as large in both
    axes are decoded at a reduced scale (1/2, 1/4 or 1/8) that stays at least this large.
    Raises DecodeError (or a subclass) naming ``path`` on any failure.
    """
    name = str(path)
    data = _read_file(Path(path), name)
    return load_image_bytes(data, name, max_pixels=max_pixels, draft_size=draft_size)


def load_image_bytes(
    data: bytes, name: str, *, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> LoadedImage:
    """Decode an image already in memory; ``name`` is used in error messages and as ``path``."""
    if not data:
        raise DecodeError(name, "empty file")
    _register_heif_once()
    try:
        if is_raw_name(name):
            return _decode_raw(data, name, max_pixels, draft_size)
        return _decode(data, name, max_pixels, draft_size)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(name, f"over Pillow's decompression-bomb limit ({exc})") from exc
    except Image.DecompressionBombWarning as exc:
        # Only reaches here where warnings are turned into errors (as in our test suite).
        raise ImageTooLargeError(name, f"over Pillow's decompression-bomb limit ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(data, name) from exc
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:
        raise DecodeError(name, _describe_decode_failure(exc)) from exc
    except Warning as exc:
        # Pillow warns about damaged files (corrupt EXIF, short reads); where warnings are
        # errors those arrive here as exceptions and must not escape untyped.
        raise DecodeError(name, f"corrupt image data (Pillow: {exc})") from exc
    except Exception as exc:
        # Pillow's plugins can fail on hostile input with anything (IndexError, KeyError, ...);
        # one bad file must not stop a batch, but log loudly in case the bug is ours.
        logger.warning("unexpected error decoding %s", name, exc_info=True)
        raise DecodeError(name, f"corrupt image data ({type(exc).__name__}: {exc})") from exc


def read_image_file(path: str | Path) -> bytes:
    """The bytes of the local file ``path``, exactly as :func:`load_image` reads them
    (FIFOs, folders and broken links refused); raises DecodeError naming the file."""
    return _read_file(Path(path), str(path))


def _read_file(path: Path, name: str) -> bytes:
    try:
        # stat first: reading a FIFO would block the worker forever, a directory gives EISDIR.
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise DecodeError(name, "is a directory, not an image file")
        if not stat.S_ISREG(mode):
            raise DecodeError(name, "not a regular file (a FIFO, socket or device)")
        return path.read_bytes()
    except FileNotFoundError as exc:
        if path.is_symlink():
            raise DecodeError(name, "broken symbolic link (its target does not exist)") from exc
        raise DecodeError(name, "file not found") from exc
    except IsADirectoryError as exc:
        raise DecodeError(name, "is a directory, not an image file") from exc
    except PermissionError as exc:
        raise DecodeError(name, "cannot read file: permission denied") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DecodeError(name, "symbolic link loop") from exc
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise DecodeError(name, f"cannot read file: {reason}") from exc


def _decode(
    data: bytes, name: str, max_pixels: int, draft_size: tuple[int, int] | None
) -> LoadedImage:
    with Image.open(io.BytesIO(data)) as opened:
        full_width, full_height = opened.size
        if full_width * full_height > max_pixels:
            raise ImageTooLargeError(
                name,
                f"{full_width}x{full_height} = {full_width * full_height} pixels is over the "
                f"limit of {max_pixels} (LOOKALIKE_MAX_IMAGE_PIXELS)",
            )
        image_format = (opened.format or "UNKNOWN").upper()
        if draft_size is not None and image_format == "JPEG":
            # A JPEG's EXIF is parsed at open; the draft needs the orientation before decoding.
            _apply_draft(opened, draft_size, _orientation(_read_exif(opened, name)))
        opened.load()  # decode every pixel now so truncation surfaces inside our guard
        # Read after load: some formats (PNG eXIf after IDAT) only know their EXIF then.
        exif = _read_exif(opened, name)
        orientation = _orientation(exif)
        image = _to_rgb(opened)
    if orientation in _ORIENTATION_FIX:
        image = image.transpose(_ORIENTATION_FIX[orientation])
    if orientation in _SWAPS_AXES:
        full_width, full_height = full_height, full_width
    return LoadedImage(
        path=name,
        data=data,
        image=image,
        width=full_width,
        height=full_height,
        format=image_format,
        exif=exif,
    )


def _decode_raw(
    data: bytes, name: str, max_pixels: int, draft_size: tuple[int, int] | None
) -> LoadedImage:
    decoded = decode_raw(data, name, max_pixels=max_pixels, draft_size=draft_size)
    return LoadedImage(
        path=name,
        data=data,
        image=decoded.image,
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        exif=decoded.exif,
    )


def _read_exif(image: Image.Image, name: str) -> Image.Exif | None:
    try:
        exif = image.getexif()
    except Exception as exc:  # malformed EXIF must not cost us the image
        logger.debug("ignoring unreadable EXIF in %s: %s", name, exc)
        return None
    return exif if len(exif) else None


def _orientation(exif: Image.Exif | None) -> int:
    if exif is None:
        return 1
    value = exif.get(_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and value in _ORIENTATION_FIX else 1


def _apply_draft(image: Image.Image, draft_size: tuple[int, int], orientation: int) -> None:
    # draft_size is in displayed (oriented) pixels; the JPEG is stored before orientation.
    want_w, want_h = draft_size
    if orientation in _SWAPS_AXES:
        want_w, want_h = want_h, want_w
    if image.width >= 2 * want_w and image.height >= 2 * want_h:
        # mode None: scale only; colour conversion stays with _to_rgb so every path agrees.
        image.draft(None, (want_w, want_h))


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; alpha is composited over white."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        # Already loaded, so it no longer needs the file object; a copy would only cost time.
        return image
    if mode in _SIXTEEN_BIT_MODES or mode in {"I", "F"}:
        return Image.fromarray(_to_uint8(image), "L").convert("RGB")
    if mode == "La":
        image = image.convert("LA")  # Pillow has no direct La -> RGBA conversion
    if mode in _ALPHA_MODES or (mode in {"P", "L", "RGB", "1"} and "transparency" in image.info):
        return _over_white(image.convert("RGBA"))
    return image.convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def _to_uint8(image: Image.Image) -> np.ndarray:
    """Scale a 16-bit, 32-bit integer or float grayscale image to 0..255 without clipping.

    16-bit and ``I`` images are taken as 0..65535 (the range of the 16-bit files that open as
    ``I``); ``F`` images as 0..1 or 0..255 when they fit, otherwise stretched min..max.
    """
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low >= 0.0 and high <= 1.0:
            values = values * 255.0
        elif low < 0.0 or high > 255.0:
            values = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    else:
        values = np.clip(values, 0, 65535) / 257.0
    return np.rint(values).astype(np.uint8)


def _unidentified(data: bytes, name: str) -> DecodeError:
    """Say why Pillow could not identify ``data``: a damaged known format, or not an image."""
    for signature, format_name in _SIGNATURES:
        if data.startswith(signature):
            problem = _png_problem(data) if format_name == "PNG" else None
            return DecodeError(
                name, f"corrupt {format_name}: {problem or 'truncated or damaged header'}"
            )
    if data[4:8] == b"ftyp" and not _heif_state:  # ISO media file: HEIC, AVIF (or a video)
        return UnsupportedImageError(
            name, "HEIF/AVIF or other ISO media file; HEIC/AVIF need pillow-heif installed"
        )
    return UnsupportedImageError(name, "not an image (unrecognised format)")


def _png_problem(data: bytes) -> str | None:
    """Walk PNG chunks and name the first bad CRC or truncation, if any."""
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, chunk_type = struct.unpack(">I4s", data[offset : offset + 8])
        end = offset + 8 + length + 4
        if end > len(data):
            return f"truncated image data (in {_chunk_name(chunk_type)} chunk)"
        body = data[offset + 4 : offset + 8 + length]
        (stored_crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(body) != stored_crc:
            return f"bad CRC checksum in {_chunk_name(chunk_type)} chunk"
        if chunk_type == b"IEND":
            return None
        offset = end
    return "truncated image data"


def _chunk_name(chunk_type: bytes) -> str:
    return chunk_type.decode("ascii") if chunk_type.isalpha() else repr(chunk_type)


def _describe_decode_failure(exc: BaseException) -> str:
    message = str(exc)
    lowered = message.lower()
    if "truncated" in lowered or isinstance(exc, EOFError):
        return "truncated image data"
    if "broken data stream" in lowered or "crc" in lowered or "checksum" in lowered:
        return f"corrupt image data ({message})"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding"
    return f"corrupt image data (Pillow: {message or type(exc).__name__})"


def _register_heif_once() -> None:
    """Register pillow-heif's HEIC/AVIF opener on first use, if the package is installed."""
    global _heif_state
    if _heif_state is not None:
        return
    with _heif_lock:
        if _heif_state is not None:
            return
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif_state = True
        except ImportError:
            _heif_state = False
        except Exception as exc:  # a broken optional plugin must not break JPEG/PNG decoding
            logger.warning("pillow-heif is installed but could not be registered: %s", exc)
            _heif_state = False
