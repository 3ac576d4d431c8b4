"""Copies turned by a few degrees, found by the fill their turn leaves in the frame's corners.

Turning a photo by a few degrees, whether its frame is kept (the corners cut off) or grown to
hold it, leaves its corners a uniform fill (black, white, any colour) whose edges are the turned
photo's sides: on each side of the frame, the depth of the fill, read along the side, is a
staircase of slope tan(angle). :func:`turn_of` reads that slope off the four sides of a thumbnail
and answers the angle where at least three sides agree on one turn (by their signs: a turn
counter-clockwise lowers the fill along the top and raises it along the bottom, left to right).
Turned back by it, the copy is its original again, but for the corners the turn cut off
(:func:`clear_scale`): ``services.frames`` hashes it so.

A photo whose own corners are of one colour (a product on white, a night sky) has no staircase
of one slope on three sides: it is read as not turned (measured on 1,000 UKBench photos and
their 29 kinds of copies: no photo read as turned but turned ones; docs/benchmarks.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image

TOLERANCE: Final = 14.0  # colour difference (max over RGB) still the fill's, as in frames
MIN_DEGREES: Final = 1.0  # a smaller turn leaves too short a staircase to read
MAX_DEGREES: Final = 10.0
_DEPTH_CAP: Final = 0.4  # the fill's depth is read up to this share of the frame
_MIN_RUN: Final = 10  # positions along a side a staircase spans at least
_MIN_STEPS: Final = 3  # ... and steps it takes
_JUMP: Final = 2  # a change of depth larger than this between neighbours ends a staircase
# A step may sit this many positions, or this share of a step, off the staircase's line: the
# photo beside the fill, where it is near the fill's colour, moves a step by some positions.
_STEP_SLACK: Final = 3.0
_STEP_SHARE: Final = 0.4
_AGREE: Final = 0.15  # sides agree when their slopes are within this share ...
_AGREE_FLOOR: Final = 0.008  # ... or this much
_CLEAR: Final = 0.01  # a window is clear of the cut corners with at most this share in them

Pixels = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Turn:
    """A turn read off a frame: ``degrees`` counter-clockwise (as PIL's ``rotate``), and the
    corners' fill colour."""

    degrees: float
    fill: tuple[int, int, int]

    def undo(self, image: Image.Image) -> Image.Image:
        """``image`` turned back, its new corners the fill colour."""
        rgb = image if image.mode == "RGB" else image.convert("RGB")
        return rgb.rotate(-self.degrees, Image.Resampling.BICUBIC, fillcolor=self.fill)

    def clear(self, size: tuple[int, int]) -> Image.Image:
        """Which pixels of a frame of ``size`` turned back hold the copy's own (255) and which
        the corners its turn cut off (0)."""
        whole = Image.new("L", size, 255)
        return whole.rotate(-self.degrees, Image.Resampling.NEAREST, fillcolor=0)


def turn_of(pixels: Pixels) -> Turn | None:
    """The turn of a frame (``pixels``: an RGB thumbnail, (height, width, 3)), or None."""
    corners = pixels[[0, 0, -1, -1], [0, -1, 0, -1]]
    if float(np.ptp(corners, axis=0).max()) > 2 * TOLERANCE:
        return None  # the usual case, and the cheap one: the corners differ
    fill = np.median(corners, axis=0)
    if float(np.abs(corners - fill).max()) > TOLERANCE:
        return None
    mask = np.abs(pixels - fill).max(axis=2) <= TOLERANCE
    # Each side as rows from it inward, and the sign its slope has for a counter-clockwise turn.
    sides = ((mask, -1), (mask[::-1], 1), (mask.T, 1), (mask.T[::-1], -1))
    slopes = []
    for lines, sign in sides:
        slope = _staircase_slope(lines)
        if slope is not None:
            slopes.append(sign * slope)
    if len(slopes) < 3:
        return None
    middle = float(np.median(slopes))
    agree = [s for s in slopes if abs(s - middle) <= max(_AGREE * abs(middle), _AGREE_FLOOR)]
    if len(agree) < 3:
        return None
    degrees = math.degrees(math.atan(float(np.mean(agree))))
    if not MIN_DEGREES <= abs(degrees) <= MAX_DEGREES:
        return None
    colour = (round(float(fill[0])), round(float(fill[1])), round(float(fill[2])))
    return Turn(degrees, colour)


def clear_scale(clear: Image.Image, scales: tuple[float, ...]) -> float | None:
    """The first of ``scales`` whose centred window of ``clear`` (:meth:`Turn.clear`, cropped
    like the region it masks) holds at most :data:`_CLEAR` of cut corners; None if none does."""
    mask = np.asarray(clear) > 0
    h, w = mask.shape
    for scale in scales:
        dx, dy = round(w * (1 - scale) / 2), round(h * (1 - scale) / 2)
        window = mask[dy : max(dy + 1, h - dy), dx : max(dx + 1, w - dx)]
        if 1.0 - float(window.mean()) <= _CLEAR:
            return scale
    return None


def _staircase_slope(lines: npt.NDArray[np.bool_]) -> float | None:
    """The slope (depth per position, left to right along the side) of the longest staircase
    of fill depth along the side whose first row is ``lines[0]``, or None where there is none."""
    cap = max(1, int(lines.shape[0] * _DEPTH_CAP))
    top = lines[:cap]
    depth = np.where(top.all(axis=0), cap, np.argmin(top, axis=0))
    start, stop = _longest_run(depth, cap)
    if stop - start < _MIN_RUN:
        return None
    run = depth[start:stop]
    ends_at_zero = (start > 0 and depth[start - 1] == 0) or (
        stop < depth.size and depth[stop] == 0
    )  # a wedge: its staircase steps down to no fill at all
    low = 0 if ends_at_zero else int(run.min())
    high = int(run.max())
    if high - low < _MIN_STEPS:
        return None
    half = run.size // 2
    falling = bool(run[:half].mean() > run[half:].mean())
    ordered = run if falling else run[::-1]
    levels = np.arange(low + 1, high + 1, dtype=np.float64)
    # Where the staircase leaves each level: the positions (from its high end) at or above it.
    steps = (ordered[None, :] >= levels[:, None]).sum(axis=1).astype(np.float64)
    per_level, offset = np.polyfit(levels, steps, 1)
    residual = np.abs(steps - (per_level * levels + offset)).max()
    if per_level >= 0 or residual > max(_STEP_SLACK, _STEP_SHARE * abs(per_level)):
        return None  # not one straight edge
    slope = -1.0 / float(per_level)
    return -slope if falling else slope


def _longest_run(depth: npt.NDArray[np.int64], cap: int) -> tuple[int, int]:
    """The longest run of positions with some fill but not the cap, unbroken by a jump (the
    first such run where two are as long); (0, 0) when there is none."""
    inside = (depth > 0) & (depth < cap)
    if not inside.any():
        return 0, 0
    breaks = ~inside
    breaks[1:] |= np.abs(np.diff(depth)) > _JUMP  # a jump starts a new run
    runs = np.where(inside, np.cumsum(breaks), -1)
    counts = np.bincount(runs[inside])
    longest = int(np.argmax(counts))
    where = np.flatnonzero(runs == longest)
    return int(where[0]), int(where[-1]) + 1
