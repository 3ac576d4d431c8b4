"""All pairs of images that :data:`services.frames.RULES` match by their frame codes.

Whole-collection dedup finds pHash pairs (with flips and turns) with
:func:`services.hamming_pairs.pairs_within`; this module adds the pairs that only the frame codes
find, with two more joins of the same kind, identity codes only (stored rows keep no flips of
their frame codes):

- the whole-frame pHashes of every row beside the content codes of the rows that have a border
  (the others' content code *is* their pHash): ``phash``/``content`` and ``content``/``content``;
- every row's content code beside its three centred windows: ``content``/``window`` at the
  radius, ``window``/``window`` of one scale at the radius less the rule's slack.

Each join is one multi-index-hashing pass over 2N to 4N codes; pairs of one row with itself and
combinations that no rule names are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.frames import RULES, WINDOW_CODES, Code, Rule
from services.hamming_pairs import pairs_within

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

# Kind numbers of the join items: column k of ``frames`` is kind k + 1.
_KINDS = (Code.PHASH, Code.CONTENT, *WINDOW_CODES)


@dataclass(frozen=True)
class FramePairs:
    """Row pairs ``left < right`` matched by a frame rule, each once, with the closest
    distance and the rule (an index into :data:`RULES`) that reached it."""

    left: I64
    right: I64
    distance: npt.NDArray[np.uint8]
    rule: npt.NDArray[np.int8]

    def __len__(self) -> int:
        return int(self.left.size)


def describe_rule(rule: Rule) -> str:
    """How a frame rule reads in a dedup group ("content region against 80% window")."""
    names = {
        Code.PHASH: "whole frame",
        Code.CONTENT: "content region",
        Code.WINDOW90: "90% window",
        Code.WINDOW80: "80% window",
        Code.WINDOW70: "70% window",
    }
    if rule.query is rule.stored:
        return f"{names[rule.query]}s"
    return f"{names[rule.query]} against {names[rule.stored]}"


def frame_pairs(codes: U64, frames: U64, max_hamming: int) -> FramePairs:
    """Pairs of rows that a frame rule matches (``codes`` (N,), ``frames`` (N, 4) as
    :class:`services.store.HashScan` holds them), beside what the pHash join finds."""
    count = codes.size
    if frames.shape != (count, len(_KINDS) - 1):
        raise ValueError(f"frames must be ({count}, {len(_KINDS) - 1}), got {frames.shape}")
    parts: list[tuple[I64, I64, npt.NDArray[np.uint8], npt.NDArray[np.int8]]] = []
    bordered = np.flatnonzero(frames[:, 0] != codes)
    # phash/content and content/content: the pHashes, then the bordered rows' content codes.
    rows = np.concatenate([np.arange(count), bordered])
    kinds = np.concatenate([np.zeros(count, np.int64), np.ones(bordered.size, np.int64)])
    parts.append(_join(np.concatenate([codes, frames[bordered, 0]]), rows, kinds, max_hamming))
    # content/window and window/window: every row's content code and its windows.
    stacked = np.ascontiguousarray(frames.T).reshape(-1)
    rows = np.tile(np.arange(count), len(_KINDS) - 1)
    kinds = np.repeat(np.arange(1, len(_KINDS)), count)
    parts.append(_join(stacked, rows, kinds, max_hamming))
    return _closest(parts)


def _rule_table(max_hamming: int) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int16]]:
    """For each (kind, kind): the rule that covers it (-1 none) and its radius."""
    size = len(_KINDS)
    rule = np.full((size, size), -1, np.int8)
    radius = np.full((size, size), -1, np.int16)
    for index, candidate in enumerate(RULES):
        a, b = _KINDS.index(candidate.query), _KINDS.index(candidate.stored)
        if (a, b) == (0, 0):
            continue  # the pHash join's (with flips and turns)
        for x, y in ((a, b), (b, a)):
            if rule[x, y] < 0:
                rule[x, y], radius[x, y] = index, candidate.radius(max_hamming)
    return rule, radius


def _join(
    codes: U64, rows: I64, kinds: I64, max_hamming: int
) -> tuple[I64, I64, npt.NDArray[np.uint8], npt.NDArray[np.int8]]:
    found = pairs_within(np.ascontiguousarray(codes), max_hamming)
    rule_of, radius_of = _rule_table(max_hamming)
    left_row, right_row = rows[found.left], rows[found.right]
    left_kind, right_kind = kinds[found.left], kinds[found.right]
    rule = rule_of[left_kind, right_kind]
    keep = (left_row != right_row) & (rule >= 0)
    keep &= found.distance.astype(np.int16) <= radius_of[left_kind, right_kind]
    left, right = np.minimum(left_row, right_row)[keep], np.maximum(left_row, right_row)[keep]
    return left, right, found.distance[keep], rule[keep]


def _closest(
    parts: list[tuple[I64, I64, npt.NDArray[np.uint8], npt.NDArray[np.int8]]],
) -> FramePairs:
    left = np.concatenate([p[0] for p in parts])
    right = np.concatenate([p[1] for p in parts])
    distance = np.concatenate([p[2] for p in parts])
    rule = np.concatenate([p[3] for p in parts])
    if left.size == 0:
        return FramePairs(left, right, distance, rule)
    # Closest first, then the earlier rule; keep the first of each (left, right).
    order = np.lexsort((rule, distance, right, left))
    left, right, distance, rule = left[order], right[order], distance[order], rule[order]
    first = np.ones(left.size, np.bool_)
    first[1:] = (left[1:] != left[:-1]) | (right[1:] != right[:-1])
    return FramePairs(left[first], right[first], distance[first], rule[first])
