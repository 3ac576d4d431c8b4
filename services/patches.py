"""Codes of patches anchored at an image's own blobs: what an off-centre crop shares with its
original.

The codes of :mod:`services.frames` are of windows placed by the frame (centred, or the
content region inside a border). A crop that cuts more off one side than the other shifts the
photo against every such window, and a pHash holds within a radius of 8 for a shift of about 2%
of the side only: an off-centre crop of 10% or more meets none of them. A patch placed by the
*content* moves with it instead:

- **Anchors.** Blobs of the scale-normalised Laplacian of Gaussian (the scale space of SIFT's
  detector) on a gray thumbnail of at most :data:`_SOURCE_SIDE` pixels a side: extrema in
  position and scale, refined to a fraction of a pixel and of a scale step. A blob's position
  and scale follow the content, so the same blob is found in a crop of the image, and in a
  resized one, at the same place of the photo and the same size relative to it.
- **Codes.** Each of the :data:`PATCHES` strongest blobs whose patch (a square of
  :data:`_RATIO` times the blob's scale on each side of its centre) lies wholly inside the frame
  gets the pHash of that patch, cut from the full decode. A crop keeps the blobs it does not cut
  through, with their patches, and so their codes.
- **Verification.** Two images match when at least :data:`MATCHES_NEEDED` of their patches agree
  within :data:`MATCH_RADIUS` bits *and* on one placement (:func:`shared_patches`): each pair of
  agreeing patches says where one frame lies in the other (the ratio of their sizes, the offset
  of their centres), and a copy's agreeing patches all say the same, with one frame inside the
  other (a crop lies inside its original; an original inside its bordered copy). They must also
  be at least :data:`_SHARE_NEEDED` of the patches that could agree there (:func:`verdict`): a
  copy keeps most blobs of the part of the photo it shows, while another photo of the same scene
  shares a patch or two among many.

The codes are of the *content region* (:func:`image_patch_codes`, the one entry point of
ingestion, migration, queries and benchmarks: borders, bars and app chrome peeled, a turned copy
turned back), so a caption's text or a window's buttons, alike in unrelated copies, hold no
patch. Coordinates are fractions of the region's longer side,
so they do not depend on the resolution an image was decoded at. Whole-collection dedup joins
them (:mod:`services.patch_pairs`); about 2-3 ms of CPU an image (docs/benchmarks.md,
signal_cost).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
import scipy.fft
from PIL import Image

from services.frames import FrameCodes
from services.hashing import PHASH_SIDE, phash_codes

PATCHES: Final = 16  # codes an image keeps, strongest blobs first
# Two patch codes agree within the dedup radius (``--max-hamming``) less this: a patch is a
# smaller, and so a less distinctive, part of the photo than the whole frame.
PATCH_SLACK: Final = 2
MATCH_RADIUS: Final = 8 - PATCH_SLACK  # at lookalike dedup's default radius
MATCHES_NEEDED: Final = 2  # agreeing patches on one placement that make a match

_SOURCE_SIDE: Final = 160  # blobs are found on a gray thumbnail of at most this side
# Blob scales in thumbnail pixels, 3 an octave; the smallest is there as the neighbour of the next
# (its patches are under _MIN_HALF).
_SIGMAS: Final = tuple(2.0 * 2.0 ** (i / 3) for i in range(1, 10))
_RATIO: Final = 3.0  # a patch's half side, in blob scales
_MIN_HALF: Final = 8.0  # thumbnail pixels: a smaller patch is too small to hash
_THRESHOLD: Final = 2.0  # a blob's |response| (gray levels) at least this
_INSIDE_SLACK: Final = 0.03  # of the longer side: how far a frame may stick out of the other
_SCALE_SLACK: Final = 0.1  # |log| of the ratio of two placements' scales
_SHIFT_SLACK: Final = 0.03  # of the longer side: how far two placements' offsets may differ
_DISTINCT: Final = 0.5  # two agreeing patches are two when their centres lie this many halves apart
# Of the patches that could agree on a placement (those of the image with fewer inside the two
# frames' overlap), at least this share must: measured on UKBench copies beside other views of
# each object (docs/benchmarks.md, copy_detection), the share that keeps precision where the
# whole-frame and frame codes had it.
_SHARE_NEEDED: Final = 0.15

# The stored form: a header of two uint16, then per patch a uint64 and three uint16.
_UNIT: Final = 65535.0
_HEADER: Final = 4
_RECORD: Final = np.dtype([("code", ">u8"), ("x", ">u2"), ("y", ">u2"), ("half", ">u2")])
PATCH_HEX_LENGTH: Final = 2 * (_HEADER + PATCHES * _RECORD.itemsize)

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]
U16 = npt.NDArray[np.uint16]


_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


@dataclass(frozen=True)
class PatchCodes:
    """An image's patch codes and where each patch lies, in fractions of the frame's longer side
    (``width`` and ``height`` are the frame's: one of them is 1)."""

    width: float
    height: float
    codes: U64  # (n,) pHashes as integers, msb-first as services.hashing packs them
    x: F32  # (n,) patch centres
    y: F32
    half: F32  # (n,) half the patch's side

    def __len__(self) -> int:
        return int(self.codes.size)

    def to_hex(self) -> str:
        """The stored form (schema field ``patch_codes``, docs/schema.md): the frame's width and
        height, then per patch its code, centre and half side; every number big-endian, the
        fractions as multiples of 1/65535. Never empty: "" is a row whose codes are unknown."""
        header = np.array([self.width, self.height]) * _UNIT
        body = np.empty(len(self), _RECORD)
        body["code"] = self.codes
        body["x"], body["y"], body["half"] = (np.stack([self.x, self.y, self.half]) * _UNIT).round()
        return (header.round().astype(">u2").tobytes() + body.tobytes()).hex()

    @classmethod
    def from_hex(cls, text: str) -> PatchCodes | None:
        """Inverse of :meth:`to_hex` (to 1/65535); None for "" (codes unknown)."""
        if not text:
            return None
        table = patch_table([text])
        return cls(
            float(table.width[0]), float(table.height[0]),
            table.codes, table.x, table.y, table.half,
        )  # fmt: skip


@dataclass(frozen=True)
class PatchTable:
    """The patch codes of many rows, flat: patch k belongs to row ``row[k]``; rows whose codes
    are unknown have none (``known`` False)."""

    row: I64
    codes: U64
    x: F32
    y: F32
    half: F32
    width: F32  # (rows,) each row's frame
    height: F32
    known: npt.NDArray[np.bool_]  # (rows,)


def join_tables(tables: Sequence[PatchTable]) -> PatchTable:
    """One table of the rows of ``tables``, in their order."""
    offsets = np.cumsum([0, *(t.known.size for t in tables)])[:-1]
    return PatchTable(
        row=np.concatenate(
            [np.empty(0, np.int64), *(t.row + o for t, o in zip(tables, offsets, strict=True))]
        ),
        codes=np.concatenate([np.empty(0, np.uint64), *(t.codes for t in tables)]),
        x=np.concatenate([np.empty(0, np.float32), *(t.x for t in tables)]),
        y=np.concatenate([np.empty(0, np.float32), *(t.y for t in tables)]),
        half=np.concatenate([np.empty(0, np.float32), *(t.half for t in tables)]),
        width=np.concatenate([np.empty(0, np.float32), *(t.width for t in tables)]),
        height=np.concatenate([np.empty(0, np.float32), *(t.height for t in tables)]),
        known=np.concatenate([np.empty(0, np.bool_), *(t.known for t in tables)]),
    )


def patch_table(texts: Sequence[str]) -> PatchTable:
    """The :class:`PatchTable` of rows' ``patch_codes`` fields, in their order."""
    headers = np.zeros((len(texts), 2), np.float32)
    known = np.zeros(len(texts), np.bool_)
    bodies: list[bytes] = []
    counts = np.zeros(len(texts), np.int64)
    for index, text in enumerate(texts):
        if not text:
            continue
        raw = bytes.fromhex(text)
        if len(raw) < _HEADER or (len(raw) - _HEADER) % _RECORD.itemsize:
            raise ValueError(f"patch_codes of {len(text)} hex digits is not a header and patches")
        headers[index] = np.frombuffer(raw[:_HEADER], ">u2") / _UNIT
        known[index] = True
        bodies.append(raw[_HEADER:])
        counts[index] = (len(raw) - _HEADER) // _RECORD.itemsize
    body = np.frombuffer(b"".join(bodies), _RECORD)
    return PatchTable(
        row=np.repeat(np.arange(len(texts), dtype=np.int64), counts),
        codes=body["code"].astype(np.uint64),
        x=from_units(body["x"]),
        y=from_units(body["y"]),
        half=from_units(body["half"]),
        width=headers[:, 0].copy(),
        height=headers[:, 1].copy(),
        known=known,
    )


def stored_form(codes: PatchCodes | None) -> str:
    """The ``patch_codes`` field that holds ``codes`` ("" where they are unknown)."""
    return codes.to_hex() if codes is not None else ""


def stored_table(codes: Sequence[PatchCodes | None]) -> PatchTable:
    """The :class:`PatchTable` of ``codes`` as stored rows hold them (quantised), so that fresh
    codes agree as they will once stored."""
    return patch_table([stored_form(c) for c in codes])


def to_units(fractions: F32) -> U16:
    """Places and sizes (fractions of the frame's longer side) as the stored 16-bit integers:
    exact for values :func:`from_units` made."""
    units: U16 = np.rint(np.asarray(fractions, np.float64) * _UNIT).astype(np.uint16)
    return units


def from_units(units: npt.NDArray[np.unsignedinteger[Any]]) -> F32:
    """The stored 16-bit places and sizes as fractions (as every reader of them computes them)."""
    fractions: F32 = (units / _UNIT).astype(np.float32)
    return fractions


def patch_radius(max_hamming: int) -> int:
    """The radius patch codes agree within at a dedup radius of ``max_hamming``."""
    return max(0, max_hamming - PATCH_SLACK)


def image_patch_codes(image: Image.Image, frames: FrameCodes) -> PatchCodes:
    """The patch codes ingestion stores for ``image``: those of its content region
    (``frames``: its frame codes), so that a stored row's and a query's agree bit for bit."""
    return patch_codes(frames.content_region(image))


def patch_codes(image: Image.Image, count: int = PATCHES) -> PatchCodes:
    """The codes of the ``count`` strongest blobs' patches of ``image`` (as displayed: callers
    pass the decode that ingestion hashes)."""
    gray = image if image.mode == "L" else image.convert("L")
    long_side = float(max(gray.size))
    thumb, scale = _thumbnail(gray)
    blobs = _blobs(np.asarray(thumb, np.float32), count)
    x, y, half = (blobs / (scale * long_side)).T.astype(np.float32)
    side = (PHASH_SIDE, PHASH_SIDE)
    thumbs = [
        np.asarray(gray.resize(side, Image.Resampling.BILINEAR, box=_box(*k, long_side, gray.size)))
        for k in zip(x.tolist(), y.tolist(), half.tolist(), strict=True)
    ]
    codes = phash_codes(np.stack(thumbs)) if thumbs else np.empty(0, np.uint64)
    return PatchCodes(gray.width / long_side, gray.height / long_side, codes, x, y, half)


def shared_patches(a: PatchCodes, b: PatchCodes, radius: int = MATCH_RADIUS) -> int:
    """How many patches of ``a`` agree with one of ``b`` (within ``radius`` bits) on a single
    placement of one frame inside the other: the largest such set; 0 when it is less than
    :data:`_SHARE_NEEDED` of the patches that could agree there (:func:`verdict`)."""
    if not len(a) or not len(b):
        return 0
    distance = np.bitwise_count(a.codes[:, None] ^ b.codes[None, :])
    ia, ib = np.nonzero(distance <= radius)
    if ia.size == 0:
        return 0
    return int(
        verdict(
            a.x[ia], a.y[ia], a.half[ia], b.x[ib], b.y[ib], b.half[ib],
            a.x, a.y, a.width, a.height, b.x, b.y, b.width, b.height,
        )
    )  # fmt: skip


@_jit
def verdict(
    ax: F32, ay: F32, ahalf: F32, bx: F32, by: F32, bhalf: F32,
    a_all_x: F32, a_all_y: F32, aw: float, ah: float,
    b_all_x: F32, b_all_y: F32, bw: float, bh: float,
) -> int:  # fmt: skip
    """The agreeing patches of two images (:func:`placement`) where they are at least
    :data:`_SHARE_NEEDED` of the patches that lie where the two frames overlap on that placement
    in the image that has fewer there (``*_all_*``: every patch of each image), else 0.

    A copy keeps most blobs of the part of the photo it shows, so most patches that could agree
    do; another photo of one scene agrees on a few patches among many."""
    agreeing, ratio, tx, ty = placement(ax, ay, ahalf, bx, by, bhalf, aw, ah, bw, bh)
    if agreeing == 0:
        return 0
    a_there = 0  # a's patch centres that fall inside b's frame
    for k in range(a_all_x.shape[0]):
        x, y = tx + ratio * a_all_x[k], ty + ratio * a_all_y[k]
        if 0.0 <= x <= bw and 0.0 <= y <= bh:
            a_there += 1
    b_there = 0
    for k in range(b_all_x.shape[0]):
        x, y = (b_all_x[k] - tx) / ratio, (b_all_y[k] - ty) / ratio
        if 0.0 <= x <= aw and 0.0 <= y <= ah:
            b_there += 1
    if agreeing < _SHARE_NEEDED * min(a_there, b_there):
        return 0
    return agreeing


@_jit
def placement(
    ax: F32, ay: F32, ahalf: F32, bx: F32, by: F32, bhalf: F32,
    aw: float, ah: float, bw: float, bh: float,
) -> tuple[int, float, float, float]:  # fmt: skip
    """The largest set of agreeing patch pairs (patch k of image a with patch k of image b;
    ``aw`` .. ``bh`` the frames) that place one frame inside the other the same way, and that
    placement: (pairs, b's units per a's, where a's frame's corner lies in b)."""
    n = ax.shape[0]
    ratio = np.empty(n)
    tx = np.empty(n)
    ty = np.empty(n)
    placed = np.zeros(n, np.bool_)
    for k in range(n):
        ratio[k] = bhalf[k] / ahalf[k]
        tx[k] = bx[k] - ratio[k] * ax[k]
        ty[k] = by[k] - ratio[k] * ay[k]
        r = ratio[k]
        a_in_b = _inside(tx[k], ty[k], r * aw, r * ah, bw, bh)
        b_in_a = _inside(-tx[k] / r, -ty[k] / r, bw / r, bh / r, aw, ah)
        placed[k] = a_in_b or b_in_a
    best, at = 0, 0
    for i in range(n):
        if not placed[i]:
            continue
        agreeing = 1
        for j in range(n):
            if j == i or not placed[j]:
                continue
            if abs(np.log(ratio[j] / ratio[i])) >= _SCALE_SLACK:
                continue
            if abs(tx[j] - tx[i]) >= _SHIFT_SLACK or abs(ty[j] - ty[i]) >= _SHIFT_SLACK:
                continue
            a_apart = np.hypot(ax[j] - ax[i], ay[j] - ay[i]) > _DISTINCT * ahalf[i]
            if a_apart and np.hypot(bx[j] - bx[i], by[j] - by[i]) > _DISTINCT * bhalf[i]:
                agreeing += 1  # another patch, not the same blob found twice
        if agreeing > best:
            best, at = agreeing, i
    if best == 0:
        return 0, 1.0, 0.0, 0.0
    return best, ratio[at], tx[at], ty[at]


@_jit
def _inside(
    left: float, top: float, width: float, height: float, outer_w: float, outer_h: float
) -> bool:
    """Whether the frame (left, top, width, height) lies inside (0, 0, outer_w, outer_h), up to
    :data:`_INSIDE_SLACK`."""
    return (
        left >= -_INSIDE_SLACK
        and top >= -_INSIDE_SLACK
        and left + width <= outer_w + _INSIDE_SLACK
        and top + height <= outer_h + _INSIDE_SLACK
    )


def _thumbnail(gray: Image.Image) -> tuple[Image.Image, float]:
    scale = min(1.0, _SOURCE_SIDE / max(gray.size))
    if scale == 1.0:
        return gray, 1.0
    size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
    thumb = gray.resize(size, Image.Resampling.BOX)
    return thumb, thumb.width / gray.width


def _blobs(pixels: F32, count: int) -> F64:
    """(n, 3) x, y and patch half side (thumbnail pixels) of the ``count`` strongest blobs whose
    patch lies inside the thumbnail, strongest first."""
    height, width = pixels.shape
    if min(height, width) < 3:
        return np.empty((0, 3))
    stack = _laplacians(pixels)
    s, y, x = _extrema(stack, _THRESHOLD)
    response = np.abs(stack)  # an extremum's neighbours share its sign: |.| peaks there too
    centre = response[s, y, x]
    ds = _vertex(response[s - 1, y, x], centre, response[s + 1, y, x])
    inner_x, inner_y = (x > 0) & (x < width - 1), (y > 0) & (y < height - 1)
    xl, xr = np.clip(x - 1, 0, width - 1), np.clip(x + 1, 0, width - 1)
    yu, yd = np.clip(y - 1, 0, height - 1), np.clip(y + 1, 0, height - 1)
    dx = np.where(inner_x, _vertex(response[s, y, xl], centre, response[s, y, xr]), 0.0)
    dy = np.where(inner_y, _vertex(response[s, yu, x], centre, response[s, yd, x]), 0.0)
    sigma = _SIGMAS[0] * 2.0 ** ((s + ds) / 3)
    blobs = np.stack([centre, x + dx, y + dy, _RATIO * sigma], axis=1)
    blobs = blobs[np.argsort(-blobs[:, 0], kind="stable")]
    cx, cy, half = blobs[:, 1], blobs[:, 2], blobs[:, 3]
    fits = (half >= _MIN_HALF) & (cx - half >= 0) & (cy - half >= 0)
    fits &= (cx + half <= width) & (cy + half <= height)
    chosen: F64 = blobs[fits][:count, 1:]
    return chosen


def _laplacians(pixels: F32) -> F32:
    """(scales, height, width): the scale-normalised Laplacian of Gaussian of ``pixels`` at each
    of :data:`_SIGMAS` (as ``scipy.ndimage.gaussian_laplace`` times sigma squared), by one FFT of
    the mirror-padded thumbnail: a fraction of ten spatial filterings' cost."""
    # Blobs whose patch fits lie 3 sigma from the edge: a pad of the largest sigma keeps the
    # transform's wrap-around 4 sigma from every one of them.
    pad = int(np.ceil(_SIGMAS[-1]))
    shape = tuple(scipy.fft.next_fast_len(n + 2 * pad, real=True) for n in pixels.shape)
    padded = np.pad(
        pixels,
        [(pad, size - n - pad) for n, size in zip(pixels.shape, shape, strict=True)],
        mode="symmetric",
    )
    spectrum = scipy.fft.rfft2(padded, workers=1)
    out = scipy.fft.irfft2(spectrum * _filters(shape), s=shape, workers=1)
    inner: F32 = out[:, pad : pad + pixels.shape[0], pad : pad + pixels.shape[1]]
    return inner


@functools.lru_cache(maxsize=64)
def _filters(shape: tuple[int, ...]) -> F32:
    """The LoG transfer functions of :data:`_SIGMAS` on an rfft2 grid of ``shape`` (thumbnails
    of one aspect share one)."""
    wy = (2.0 * np.pi * np.fft.fftfreq(shape[0])).astype(np.float32)
    wx = (2.0 * np.pi * np.fft.rfftfreq(shape[1])).astype(np.float32)
    w2 = wy[:, None] ** 2 + wx[None, :] ** 2
    sigmas = np.asarray(_SIGMAS, np.float32)[:, None, None] ** 2
    filters: F32 = -sigmas * w2 * np.exp(-0.5 * sigmas * w2)
    return filters


def _extrema(stack: F32, threshold: float) -> tuple[I64, I64, I64]:
    """(scale, y, x) of the values of ``stack`` beyond ``threshold`` in size that are the
    largest (positive) or smallest (negative) of their 3x3x3 neighbourhood (edges repeated on
    the image's sides; the first and last scale are only neighbours), in scan order."""
    s, y, x = np.nonzero(_extremum_mask(np.ascontiguousarray(stack), threshold))
    return s, y, x


@_jit
def _extremum_mask(stack: F32, threshold: float) -> npt.NDArray[np.bool_]:
    """:func:`_extrema` as a mask of ``stack``'s shape: each value against the largest and the
    smallest of its neighbourhood, taken axis by axis (three passes of three)."""
    high = _spread(stack, 1.0)
    low = _spread(stack, -1.0)
    found = np.zeros(stack.shape, np.bool_)
    depth, height, width = stack.shape
    for s in range(1, depth - 1):
        for y in range(height):
            for x in range(width):
                value = stack[s, y, x]
                if value > threshold:
                    found[s, y, x] = value >= high[s, y, x]
                elif value < -threshold:
                    found[s, y, x] = -value >= low[s, y, x]
    return found


@_jit
def _spread(stack: F32, sign: float) -> F32:
    """The largest of ``sign`` times each value's 3x3x3 neighbourhood (edges repeated)."""
    depth, height, width = stack.shape
    a = np.empty(stack.shape, np.float32)
    for s in range(depth):
        for y in range(height):
            for x in range(width):
                best = sign * stack[s, y, x]
                if x > 0:
                    best = max(best, sign * stack[s, y, x - 1])
                if x < width - 1:
                    best = max(best, sign * stack[s, y, x + 1])
                a[s, y, x] = best
    b = np.empty(stack.shape, np.float32)
    for s in range(depth):
        for y in range(height):
            up, down = max(y - 1, 0), min(y + 1, height - 1)
            for x in range(width):
                b[s, y, x] = max(a[s, up, x], a[s, y, x], a[s, down, x])
    for s in range(depth):
        before, after = max(s - 1, 0), min(s + 1, depth - 1)
        for y in range(height):
            for x in range(width):
                a[s, y, x] = max(b[before, y, x], b[s, y, x], b[after, y, x])
    return a


def _vertex(before: F64, centre: F64, after: F64) -> F64:
    """The offset (-0.5 to 0.5) of the top of the parabola through three equally spaced values."""
    curve = before - 2.0 * centre + after
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(curve != 0.0, 0.5 * (before - after) / curve, 0.0)
    clipped: F64 = np.clip(offset, -0.5, 0.5)
    return clipped


def _box(
    x: float, y: float, half: float, long_side: float, size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """A patch's box in the pixels of an image of ``size`` (rounding kept inside it)."""
    w, h = size
    return (
        max(0.0, (x - half) * long_side),
        max(0.0, (y - half) * long_side),
        min(float(w), (x + half) * long_side),
        min(float(h), (y + half) * long_side),
    )
