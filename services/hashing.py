"""Perceptual hashes of one image: pHash (as bytes, for Milvus binary vectors), aHash, dHash and
colour hash (as hex, for display and exact matching).

Every hash equals the ``imagehash`` library's on the same PIL image (``str(imagehash.phash(img))
== compute_hashes(img).phash.hex()``); pHash is computed here with a precomputed DCT matrix
instead of ``scipy.fftpack``, falling back to scipy exactly where a coefficient lies so close to
the median that rounding could flip a bit.

What ingestion stores and what queries are hashed with is taken from :func:`hash_input` of the
decoded image (a box-reduced copy of at least :data:`HASH_INPUT_SIDE` pixels on the short side),
through :func:`stored_hashes` and :func:`image_variants`: every caller that must agree with the
stored ``phash`` uses those, so the reduction happens in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import imagehash
import numpy as np
import numpy.typing as npt
import scipy.fftpack
from PIL import Image

PHASH_BITS: Final = 64
PHASH_BYTES: Final = PHASH_BITS // 8
_HASH_SIZE: Final = 8
_IMG_SIZE: Final = 32  # imagehash's hash_size * highfreq_factor (8 * 4)
PHASH_SIDE: Final = _IMG_SIZE  # the side of the gray thumbnail a pHash is taken of
# The whole-frame hashes are taken from the decode box-reduced to at least this short side:
# about twice the 32x32 pHash thumbnail, so its LANCZOS resample still averages; it is what a
# 640x480 JPEG decoded at 1/8 gives. A larger input changes a pHash by a fraction of a bit and
# costs more (aHash, dHash and the colour hash each read every pixel).
HASH_INPUT_SIDE: Final = 60
_REDUCIBLE_MODES: Final = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})
# Coefficients closer than this (relative to the largest) to the median are "near ties": the
# matrix product and scipy's FFT round differently, so those hashes are recomputed with scipy.
_TIE_TOLERANCE: Final = 1e-9

FloatArray = npt.NDArray[np.float64]


def _dct_matrix() -> FloatArray:
    # Unnormalised DCT-II as scipy.fftpack.dct computes it: y[k] = 2 * sum x[n] cos(pi k (2n+1)/2N),
    # keeping only the 8 lowest frequencies that the hash uses.
    k = np.arange(_HASH_SIZE, dtype=np.float64)[:, None]
    n = np.arange(_IMG_SIZE, dtype=np.float64)[None, :]
    matrix: FloatArray = 2.0 * np.cos(np.pi * k * (2.0 * n + 1.0) / (2.0 * _IMG_SIZE))
    return matrix


_DCT: Final = _dct_matrix()
_DCT_T: Final = np.ascontiguousarray(_DCT.T)
# (-1)^k: the DCT of a reversed sequence is the original's with odd frequencies negated.
_ALTERNATING: Final = np.where(np.arange(_HASH_SIZE) % 2 == 0, 1.0, -1.0)


@dataclass(frozen=True)
class ImageHashes:
    """The perceptual hashes of one image.

    ``phash`` is 8 bytes, bits packed big-endian in imagehash's row-major order, so
    ``phash.hex() == str(imagehash.phash(img))``; the others are imagehash's hex strings.
    """

    phash: bytes
    ahash: str
    dhash: str
    colorhash: str


def hash_input(image: Image.Image) -> Image.Image:
    """``image`` box-reduced by the largest whole factor that keeps its short side at least
    :data:`HASH_INPUT_SIDE` pixels (``image`` itself when it is no larger)."""
    factor = min(image.size) // HASH_INPUT_SIDE
    if factor < 2:
        return image
    if image.mode not in _REDUCIBLE_MODES:
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    return image.reduce(factor)


def stored_hashes(image: Image.Image) -> tuple[ImageHashes, list[bytes]]:
    """The hashes and pHash variants ingestion stores for a decoded ``image``: those of
    :func:`hash_input` (``image``)."""
    return hashes_and_variants(hash_input(image))


def image_variants(image: Image.Image) -> list[bytes]:
    """The 8 pHash variants of a decoded ``image`` as ingestion computes them (index 0 is its
    stored ``phash``): what searches and dedup compare with the stored codes."""
    return phash_variants(hash_input(image))


def compute_hashes(image: Image.Image) -> ImageHashes:
    """All four hashes of ``image`` (any mode), each equal to imagehash's."""
    return hashes_and_variants(image)[0]


def hashes_and_variants(image: Image.Image) -> tuple[ImageHashes, list[bytes]]:
    """``compute_hashes(image)`` and ``phash_variants(image)``, sharing the grayscale work.

    Ingestion needs both; the grayscale image and its 32x32 thumbnail are computed once (the
    hashes that start with ``convert("L")`` get the same pixels from an image already in L).
    """
    gray = image.convert("L")
    variants = _variants_of_gray(_gray32(gray))
    hashes = ImageHashes(
        phash=variants[0],
        ahash=str(imagehash.average_hash(gray)),
        dhash=str(imagehash.dhash(gray)),
        colorhash=_colorhash(image, gray),
    )
    return hashes, variants


def phash(image: Image.Image, resample: Image.Resampling = Image.Resampling.LANCZOS) -> bytes:
    """The 64-bit pHash of ``image`` as 8 bytes; bit-for-bit ``imagehash.phash(image)`` with the
    default ``resample`` (imagehash's LANCZOS), the filter of the 32x32 thumbnail."""
    return _phash_of_gray(_gray32(image, resample))


def phash_codes(thumbnails: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint64]:
    """The pHashes of ``(n, 32, 32)`` gray thumbnails as integers (msb-first, as
    :func:`phash_to_int` reads :func:`phash`'s bytes), in one batched DCT. Near a tie of the
    median (:func:`phash` defers to scipy there) a bit may differ from :func:`phash`'s: for codes
    that are only ever compared with each other."""
    low = _DCT @ thumbnails.astype(np.float64) @ _DCT_T
    flat = low.reshape(len(thumbnails), PHASH_BITS)
    bits = flat > np.median(flat, axis=1, keepdims=True)
    codes: npt.NDArray[np.uint64] = np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)
    return codes


def phash_variants(image: Image.Image) -> list[bytes]:
    """pHashes of the 8 rotations/mirrors of ``image``, in this fixed order (PIL transposes):

    0 identity, 1 mirror (FLIP_LEFT_RIGHT), 2 ROTATE_90, 3 ROTATE_180, 4 ROTATE_270,
    5 mirror then ROTATE_90, 6 mirror then ROTATE_180, 7 mirror then ROTATE_270.

    Index 0 equals :func:`phash`. The others come from the identity's DCT coefficients by sign
    flips and transposition (exact for the 32x32 thumbnail), so they may differ from imagehash on
    a transposed full image by a bit or two, where resampling rounds differently.
    """
    return _variants_of_gray(_gray32(image))


def _variants_of_gray(gray: npt.NDArray[np.uint8]) -> list[bytes]:
    identity = _low_dct(gray)
    mirror = identity * _ALTERNATING[None, :]  # reversing columns negates odd column frequencies
    variants = [_hash_or_exact(identity, gray), _hash_or_exact(mirror, gray[:, ::-1])]
    for coefficients, pixels in ((identity, gray), (mirror, gray[:, ::-1])):
        for _ in range(3):
            # np.rot90 (PIL's counter-clockwise ROTATE_90) = reverse the rows of the transpose;
            # the pixels travel along only for the rare near-tie fallback.
            coefficients = _ALTERNATING[:, None] * coefficients.T
            pixels = np.rot90(pixels)
            variants.append(_hash_or_exact(coefficients, pixels))
    return variants


def hamming(a: bytes, b: bytes) -> int:
    """Number of differing bits between two equal-length hashes."""
    if len(a) != len(b):
        raise ValueError(f"hashes differ in length: {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def phash_to_int(value: bytes) -> int:
    """The 8-byte pHash as an unsigned integer (big-endian)."""
    if len(value) != PHASH_BYTES:
        raise ValueError(f"a pHash is {PHASH_BYTES} bytes, got {len(value)}")
    return int.from_bytes(value, "big")


def int_to_phash(value: int) -> bytes:
    """Inverse of :func:`phash_to_int`; ``value`` must fit in 64 unsigned bits."""
    if not 0 <= value < 1 << PHASH_BITS:
        raise ValueError(f"a pHash is an unsigned {PHASH_BITS}-bit integer, got {value}")
    return value.to_bytes(PHASH_BYTES, "big")


def _gray32(
    image: Image.Image, resample: Image.Resampling = Image.Resampling.LANCZOS
) -> npt.NDArray[np.uint8]:
    # Exactly imagehash's preprocessing (LANCZOS is its ANTIALIAS), so the pixels are identical.
    gray = image if image.mode == "L" else image.convert("L")
    small = gray.resize((_IMG_SIZE, _IMG_SIZE), resample)
    return np.asarray(small, dtype=np.uint8)


def _colorhash(image: Image.Image, gray: Image.Image) -> str:
    """``str(imagehash.colorhash(image))`` (binbits 3), with ``gray = image.convert("L")`` reused
    and numpy counts in place of ``numpy.histogram``; same arithmetic, so the same bits."""
    intensity = np.asarray(gray).ravel()
    hsv = np.asarray(image.convert("HSV"))
    hue, saturation = hsv[..., 0].ravel(), hsv[..., 1].ravel()
    pixels = intensity.size
    black = intensity < 256 // 8
    gray_bin = saturation < 256 // 3
    colors = ~black & ~gray_bin
    faint = colors & (saturation < 256 * 2 // 3)
    bright = colors & (saturation > 256 * 2 // 3)
    denominator = max(1, int(colors.sum()))
    # numpy.histogram over linspace(0, 255, 7): bin k holds 42.5k <= h < 42.5(k+1), 255 in the last.
    hue_bin = np.minimum((hue.astype(np.int32) * 2) // 85, 5)
    counts = [*np.bincount(hue_bin[faint], minlength=6), *np.bincount(hue_bin[bright], minlength=6)]
    fractions = [black.sum() / pixels, (~black & gray_bin).sum() / pixels]
    values = [min(7, int(float(f) * 8)) for f in fractions]
    values += [min(7, int(int(count) * 8 * 1.0 / denominator)) for count in counts]
    bits = 0
    for value in values:
        # imagehash's own (not plain binary) encoding: v // 2**(2-i) % 2**(3-i) > 0, i = 0..2.
        for i in range(3):
            bits = (bits << 1) | (value // 2 ** (2 - i) % 2 ** (3 - i) > 0)
    return f"{bits:011x}"


def _low_dct(gray: npt.NDArray[np.uint8]) -> FloatArray:
    """The 8x8 lowest-frequency coefficients of the 2-D DCT-II (axis 0, then axis 1)."""
    result: FloatArray = _DCT @ gray.astype(np.float64) @ _DCT_T
    return result


def _phash_of_gray(gray: npt.NDArray[np.uint8]) -> bytes:
    return _hash_or_exact(_low_dct(gray), gray)


def _hash_or_exact(coefficients: FloatArray, gray: npt.NDArray[np.uint8]) -> bytes:
    """Hash bits of ``coefficients`` (the low DCT of ``gray``); scipy's where near a tie."""
    flat = coefficients.ravel()
    ordered = np.sort(flat)
    middle = PHASH_BITS // 2
    below, above = float(ordered[middle - 1]), float(ordered[middle])
    # The two middle values are the ones closest to the median, so this is the tie test.
    if above - below <= 2.0 * _TIE_TOLERANCE * (float(np.abs(ordered[[0, -1]]).max()) + 1.0):
        # Near a tie, the order of rounding decides the bit: take scipy's, as imagehash does.
        exact = scipy.fftpack.dct(scipy.fftpack.dct(gray, axis=0), axis=1)
        return _bits_to_bytes(np.asarray(exact[:_HASH_SIZE, :_HASH_SIZE], dtype=np.float64))
    return np.packbits(flat > (below + above) / 2.0).tobytes()


def _bits_to_bytes(coefficients: FloatArray) -> bytes:
    bits = coefficients > np.median(coefficients)
    return np.packbits(bits.ravel()).tobytes()
