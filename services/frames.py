"""Codes that survive changes of the frame: borders around the photo, and crops of it.

A pHash is the sign of the lowest DCT frequencies of the *whole frame*, so a copy whose frame
differs (letterbox or pillarbox bars, a screenshot's window around the photo, a caption bar, a
crop) hashes far from its original. Two things bring such copies back within a Hamming radius:

- **The content region.** :func:`content_box` peels uniform or flat bands off each side: lines
  (rows or columns) that are mostly one colour (the bar's), or flat UI (few along-line edges, at
  most three colours), or lines of text on the bar (two colours blended, the bar's and an ink,
  with the bar's colour after them), ending at a straight edge where the content starts. The
  pHash of that region (``content``) is what a bordered copy shares with its original. JPEG
  noise does not count as detail (lines are judged on a 160-pixel thumbnail with a tolerance of
  14 levels), and a side is only peeled where a straight edge ends the band, so a photo's own
  plain wall or sky is left alone.
- **Centred windows** of the whole frame at 90%, 80% and 70% of each side (``windows``). A
  centred crop of an image is, up to resampling, one of its windows, and a copy rotated by a few
  degrees keeps its centre: the windows of the two agree where their whole frames do not. They
  are of the frame, not of the content region: a photo with a plain edge that ends in a straight
  line (a table's, a wall's) is peeled like a bordered one, and a crop that cuts that edge away
  is not (measured: a fifth of the UKBench photos are peeled so; docs/benchmarks.md).
- **Turned copies** (:mod:`services.turns`) are turned back first; their codes are of the
  upright frame.

Which codes are compared with which, and at which radius, is :data:`RULES` (one list, used by
whole-collection dedup, dedup on arrival and search). Bits are packed as ``services.hashing``
packs the pHash (msb-first), so every code compares with ``phash`` by Hamming distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, TypeVar, cast

import numba
import numpy as np
import numpy.typing as npt
from PIL import Image

from services.hashing import PHASH_BYTES, hash_input, phash, phash_variants
from services.turns import Turn, clear_scale, turn_of

WINDOW_SCALES: Final = (0.9, 0.8, 0.7)
FRAME_CODES: Final = 1 + len(WINDOW_SCALES)  # content, then one window per scale
FRAME_HEX_LENGTH: Final = FRAME_CODES * PHASH_BYTES * 2

_THUMB_SIDE: Final = 160  # lines are judged on a thumbnail of at most this side
_WINDOW_SOURCE: Final = 128  # windows are hashed from a thumbnail of at most this side
# A window's 32x32 thumbnail: Pillow's bilinear filter widens with the scale, so it still
# averages; it costs a third of LANCZOS and moves a window's pHash by 0.3 bits on average.
_WINDOW_RESAMPLE: Final = Image.Resampling.BILINEAR
_MIN_LINES: Final = 8  # an image smaller than this on a side has no border to find
_MAX_PEEL: Final = 0.35  # at most this fraction of a side is border
_TOLERANCE: Final = 14.0  # colour difference (max over RGB) still "the same colour"
_BAR_SHARE: Final = 0.55  # a bar line: this share of its pixels is the bar's colour
_FLAT_SHARE: Final = 0.9  # a new flat band: this share is the line's own colour
_EDGE_LEVEL: Final = 8.0  # an along-line step of this many levels is detail
_FLAT_EDGES: Final = 0.05  # a flat line has under this share of detail pixels
_UI_EDGES: Final = 0.15  # a UI line (buttons, icons) has under this share ...
_UI_COLOURS: Final = 3  # ... and this many quantised colours cover _UI_SHARE of it
_UI_SHARE: Final = 0.9
_GAP: Final = 3  # lines of something else a band may hold
_INK_SHARE: Final = 0.95  # an ink line: this share of it blends the band's colour and one ink
_INK_BAND: Final = 0.2  # ... and at least this share is the band's colour
_INK_CONTRAST: Final = 96.0  # ink is this many levels from the band's colour
_INK_EDGES: Final = 0.1  # glyphs: at least this share of an ink line is detail
_STRAIGHT_EDGE: Final = 10.0  # the content starts where this share of a line ...
_STRAIGHT_SHARE: Final = 0.6  # ... differs from the band by this many levels

Pixels = npt.NDArray[np.float32]
_F = TypeVar("_F", bound=Callable[..., Any])


def _jit(func: _F) -> _F:
    return cast(_F, numba.njit(cache=True, nogil=True)(func))


class Code(Enum):
    """The kinds of 64-bit code an image has; :data:`RULES` pairs them."""

    PHASH = "phash"  # the whole frame (services.hashing), with its 8 flips and turns
    CONTENT = "content"  # the content region, with its 8 flips and turns
    WINDOW90 = "window90"
    WINDOW80 = "window80"
    WINDOW70 = "window70"


WINDOW_CODES: Final = (Code.WINDOW90, Code.WINDOW80, Code.WINDOW70)


@dataclass(frozen=True)
class Rule:
    """Query codes of kind ``query`` (with their flips and turns where ``variants``) match stored
    codes of kind ``stored`` within ``max_hamming - slack`` bits. Rules apply both ways."""

    query: Code
    stored: Code
    slack: int = 0
    variants: bool = True

    def radius(self, max_hamming: int) -> int:
        return max(0, max_hamming - self.slack)


# Measured on copies of UKBench photos beside other photos of the same objects (docs/benchmarks.md,
# copy_detection): window against window is where unrelated photos of one scene meet, so it gets
# 2 bits less (pHash distances are even: one step) and no flips.
RULES: Final = (
    Rule(Code.PHASH, Code.PHASH),
    Rule(Code.CONTENT, Code.CONTENT),
    Rule(Code.PHASH, Code.CONTENT),
    *(Rule(Code.CONTENT, window) for window in WINDOW_CODES),
    *(Rule(window, window, slack=2, variants=False) for window in WINDOW_CODES),
)


@dataclass(frozen=True)
class Box:
    """A region of the frame as fractions of its width and height."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def whole(self) -> bool:
        return (self.left, self.top, self.right, self.bottom) == (0.0, 0.0, 1.0, 1.0)

    def crop(self, image: Image.Image) -> Image.Image:
        if self.whole:
            return image
        w, h = image.size
        box = (round(self.left * w), round(self.top * h), round(self.right * w))
        return image.crop((*box, max(box[1] + 1, round(self.bottom * h))))


WHOLE: Final = Box(0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class FrameCodes:
    """An image's frame-change codes: the content region's pHash and the frame's centred
    windows'."""

    box: Box  # of the frame, or of the frame turned back where ``turn`` is set
    content: bytes
    windows: tuple[bytes, ...]  # one per WINDOW_SCALES
    turn: Turn | None = None  # a copy turned by a few degrees (services.turns)
    content_scale: float = 1.0  # the content code's centred share of the box (turned copies)

    @property
    def framed(self) -> bool:
        """Whether the content region differs from the whole frame (a border, a turn)."""
        return self.turn is not None or not self.box.whole

    def content_region(self, image: Image.Image) -> Image.Image:
        """The region of ``image`` (the one these codes are of) whose pHash is ``content``."""
        if self.turn is None:
            return self.box.crop(image)
        return _scaled_share(self.box.crop(self.turn.undo(image)), self.content_scale)

    def to_hex(self) -> str:
        """The stored form (schema field ``frame_codes``): 4 codes of 16 hex digits."""
        return "".join(code.hex() for code in (self.content, *self.windows))

    @classmethod
    def from_hex(cls, text: str) -> FrameCodes | None:
        """Inverse of :meth:`to_hex` (the box is not stored); None for an empty field."""
        if not text:
            return None
        if len(text) != FRAME_HEX_LENGTH:
            raise ValueError(f"frame_codes is {len(text)} hex digits, expected {FRAME_HEX_LENGTH}")
        codes = [bytes.fromhex(text[i : i + 16]) for i in range(0, FRAME_HEX_LENGTH, 16)]
        return cls(WHOLE, codes[0], tuple(codes[1:]))

    def code(self, kind: Code) -> bytes:
        if kind is Code.CONTENT:
            return self.content
        if kind in WINDOW_CODES:
            return self.windows[WINDOW_CODES.index(kind)]
        raise ValueError(f"{kind.value} is not a frame code")


def frame_codes(image: Image.Image, whole_phash: bytes | None = None) -> FrameCodes:
    """The content box of ``image``, the pHash of that region and those of the frame's centred
    windows.

    ``whole_phash``: the image's stored pHash (``services.hashing.image_variants``) when the
    caller has it: the content code of an image without a border. Windows are hashed from a
    gray thumbnail of the frame of at most :data:`_WINDOW_SOURCE` pixels a side: a
    window's 32x32 pHash thumbnail needs no more, and it spares resampling the whole decode
    four times.

    A copy turned by a few degrees (:func:`services.turns.turn_of`) is turned back first and
    its borders peeled from that; its content code is of the largest centred share of the
    region (1, then :data:`WINDOW_SCALES`) clear of the corners the turn cut off, so that it
    meets its original's pHash or the window of that share."""
    pixels = _thumbnail(image)
    turn = turn_of(pixels)
    content_scale = 1.0
    if turn is not None:
        upright = turn.undo(image)
        box = _content_box(_thumbnail(upright))
        found = clear_scale(box.crop(turn.clear(upright.size)), (1.0, *WINDOW_SCALES))
        if found is None:  # too little left clear: hash the frame as it is
            turn, box = None, _content_box(pixels)
        else:
            image, content_scale = upright, found
    else:
        box = _content_box(pixels)
    gray = image.convert("L")  # once: the content region and the windows are cut from it
    if turn is None and box.whole:
        content = whole_phash if whole_phash is not None else phash(hash_input(image))
    else:
        content = phash(_scaled_share(box.crop(gray), content_scale))
    source = window_source(gray)  # windows are of the whole (upright) frame
    windows = tuple(window_code(source, _centred_box(source, share)) for share in WINDOW_SCALES)
    return FrameCodes(box, content, windows, turn, content_scale)


def window_source(image: Image.Image) -> Image.Image:
    """What windows are hashed from: ``image`` in gray, shrunk (box filter) to at most
    :data:`_WINDOW_SOURCE` pixels a side."""
    gray = image if image.mode == "L" else image.convert("L")
    scale = _WINDOW_SOURCE / max(gray.size)
    if scale < 1.0:
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        gray = gray.resize(size, Image.Resampling.BOX)
    return gray


def window_code(source: Image.Image, box: tuple[int, int, int, int]) -> bytes:
    """The pHash of the window ``box`` (left, top, right, bottom in pixels) of a
    :func:`window_source`."""
    return phash(source.crop(box), _WINDOW_RESAMPLE)


def content_variants(image: Image.Image, codes: FrameCodes) -> list[bytes]:
    """The 8 flips and turns of the content region's pHash (``services.hashing`` order)."""
    return phash_variants(codes.content_region(image))


def frame_queries(image: Image.Image, codes: FrameCodes) -> list[bytes]:
    """What an image queries stored pHashes with beside its own flips and turns (arrival,
    search): its content region's flips and turns where it has a border or a turn, then its
    windows."""
    bordered = content_variants(image, codes) if codes.framed else []
    return [*bordered, *codes.windows]


def content_box(image: Image.Image) -> Box:
    """The region of ``image`` inside its borders (:data:`WHOLE` when it has none)."""
    return _content_box(_thumbnail(image))


def _content_box(pixels: Pixels) -> Box:
    height, width = pixels.shape[:2]
    if min(height, width) < _MIN_LINES:
        return WHOLE
    top, bottom, left, right = 0, height, 0, width
    row_limit, column_limit = int(height * _MAX_PEEL), int(width * _MAX_PEEL)
    for _ in range(2):  # a second pass sees each side without the bars of the others
        before = (top, bottom, left, right)
        rows = pixels[:, left:right]  # views: the kernel reads strided lines in place
        top = max(top, _band_depth(rows, row_limit))
        bottom = min(bottom, height - _band_depth(rows[::-1], row_limit))
        columns = pixels[top:bottom].transpose(1, 0, 2)
        left = max(left, _band_depth(columns, column_limit))
        right = min(right, width - _band_depth(columns[::-1], column_limit))
        if (top, bottom, left, right) == before:
            break  # nothing peeled: the next pass would see the same lines
    if bottom - top < _MIN_LINES or right - left < _MIN_LINES:
        return WHOLE
    return Box(left / width, top / height, right / width, bottom / height)


def _thumbnail(image: Image.Image) -> Pixels:
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    scale = _THUMB_SIDE / max(rgb.size)
    if scale < 1.0:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.BOX)
    return np.asarray(rgb, dtype=np.float32)


@_jit
def _difference(a: Pixels, i: int, b: Pixels, j: int) -> float:
    """How far pixel ``a[i]`` is from ``b[j]``: the largest difference over R, G and B (the
    measure of every colour comparison here)."""
    d: float = max(abs(a[i, 0] - b[j, 0]), abs(a[i, 1] - b[j, 1]), abs(a[i, 2] - b[j, 2]))
    return d


@_jit
def _share_within(line: Pixels, colour: Pixels) -> float:
    """The share of a line's pixels within :data:`_TOLERANCE` of ``colour`` (shape (1, 3))."""
    close = 0
    for i in range(line.shape[0]):
        if _difference(line, i, colour, 0) <= _TOLERANCE:
            close += 1
    share: float = close / line.shape[0]
    return share


@_jit
def _detail_share(line: Pixels) -> float:
    """The share of a line's pixels that step from their neighbour along it by
    :data:`_EDGE_LEVEL` levels or more (in any channel): its detail."""
    steps = 0
    for i in range(1, line.shape[0]):
        if _difference(line, i, line, i - 1) >= _EDGE_LEVEL:
            steps += 1
    share: float = steps / line.shape[0]
    return share


@_jit
def _is_ui_line(line: Pixels) -> bool:
    """At most :data:`_UI_COLOURS` colours (16 levels a channel) cover most of the line."""
    keys = np.empty(line.shape[0], np.int64)
    for i in range(line.shape[0]):
        keys[i] = int(line[i, 0]) // 16 * 256 + int(line[i, 1]) // 16 * 16 + int(line[i, 2]) // 16
    keys.sort()
    top = np.zeros(_UI_COLOURS + 1, np.int64)  # the largest runs of equal keys, descending
    run = 1
    for i in range(1, keys.shape[0] + 1):
        if i < keys.shape[0] and keys[i] == keys[i - 1]:
            run += 1
            continue
        top[_UI_COLOURS] = run
        for j in range(_UI_COLOURS, 0, -1):  # insert the run in order
            if top[j] > top[j - 1]:
                top[j], top[j - 1] = top[j - 1], top[j]
        run = 1
    wide: bool = top[:_UI_COLOURS].sum() >= _UI_SHARE * line.shape[0]
    return wide


@_jit
def _is_ink_line(line: Pixels, colour: Pixels, detail: float) -> bool:
    """A line of text on a band of ``colour``: nearly all of its pixels lie, within
    :data:`_TOLERANCE`, on the segment from ``colour`` to one ink colour (the pixel farthest
    from ``colour``, of a strong contrast), as glyphs do once a thumbnail has blended them with
    the band; part of it is the band's own colour, and it steps often (``detail``: glyph
    strokes). A photo's line spreads over more colours than two; a plain one (siding, a
    shadow) hardly steps."""
    if detail < _INK_EDGES or _share_within(line, colour) < _INK_BAND:
        return False
    far, ink = -1.0, 0
    for i in range(line.shape[0]):
        d = _difference(line, i, colour, 0)
        if d > far:
            far, ink = d, i
    if far < _INK_CONTRAST:
        return False
    direction = np.empty(3, np.float32)
    for c in range(3):
        direction[c] = line[ink, c] - colour[0, c]
    norm = float(direction @ direction)
    if norm == 0.0:
        return True
    close = 0
    for i in range(line.shape[0]):
        t = 0.0
        for c in range(3):
            t += (line[i, c] - colour[0, c]) * direction[c]
        t = min(1.0, max(0.0, t / norm))
        off = 0.0
        for c in range(3):
            off = max(off, abs(line[i, c] - colour[0, c] - t * direction[c]))
        if off <= _TOLERANCE:
            close += 1
    blended: bool = close >= _INK_SHARE * line.shape[0]
    return blended


@_jit
def _band_depth(lines: Pixels, limit: int) -> int:
    """How many lines, from the first inward, are border: bands of bar, flat or UI lines that end
    at a straight edge (0 when none does). ``lines`` is (count, length, 3), a view in any
    layout. A run of up to :data:`_GAP` other lines (the rounded corners of a
    button, a line of text) does not end a band that goes on after it, and nor does a run of
    ink lines (text on the band, :func:`_is_ink_line`) of any length that the band's colour
    follows: a caption's lines of text within its bar."""
    span = min(limit, lines.shape[0] - 2)
    length = lines.shape[1]
    border = np.zeros(max(span, 0), np.bool_)
    colour = np.empty((1, 3), np.float32)
    for c in range(3):
        colour[0, c] = np.median(lines[0, :, c])
    own = np.empty((1, 3), np.float32)
    last = 0  # one past the last border line
    ink_from = -1  # the first of a run of ink lines the band has not yet closed
    for index in range(span):
        line = lines[index]
        detail = _detail_share(line)
        if _share_within(line, colour) >= _BAR_SHARE:
            border[index] = True
        else:
            for c in range(3):
                own[0, c] = np.median(line[:, c])
            if detail < _FLAT_EDGES and _share_within(line, own) >= _FLAT_SHARE:
                colour[:] = own  # a new flat band (a window's title bar, then its background)
                border[index] = True
            elif detail < _UI_EDGES and _is_ui_line(line):
                border[index] = True
            elif _is_ink_line(line, colour, detail):
                if ink_from < 0:
                    ink_from = index
                continue  # border only if the band's colour comes back after the text
            elif index - last >= _GAP:
                break
        if border[index]:
            if ink_from >= 0:
                border[ink_from:index] = True
                ink_from = -1
            last = index + 1
    # The deepest straight edge after a border line: line cut - 1 against line cut + 1.
    for cut in range(last, 0, -1):
        if not border[cut - 1]:
            continue
        differ = 0
        for i in range(length):
            if _difference(lines[cut - 1], i, lines[cut + 1], i) > _STRAIGHT_EDGE:
                differ += 1
        if differ >= _STRAIGHT_SHARE * length:
            return cut
    return 0


def _scaled_share(region: Image.Image, scale: float) -> Image.Image:
    """The centred ``scale`` share of ``region`` (the region itself at 1)."""
    return region.crop(_centred_box(region, scale)) if scale < 1.0 else region


def _centred_box(image: Image.Image, scale: float) -> tuple[int, int, int, int]:
    """The centred window of ``image`` at ``scale`` of each side, in pixels."""
    w, h = image.size
    dx, dy = round(w * (1 - scale) / 2), round(h * (1 - scale) / 2)
    return (dx, dy, max(dx + 1, w - dx), max(dy + 1, h - dy))
