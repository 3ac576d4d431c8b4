"""Keeper policies: which member of a duplicate group to keep, and why.

A policy is a chain of criteria, the first decisive one wins, e.g. ``path:^/masters/`` then
``pixels``: ``pixels`` (largest width x height), ``bytes`` (largest file), ``oldest`` (oldest EXIF
date; undated last), ``format:PNG,TIFF,JPEG`` (earlier formats preferred), ``path:REGEX`` (paths
matching preferred). Ties after the chain go to the shortest, then alphabetically first path, so
the choice is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.errors import QueryError

DEFAULT_POLICY = ("pixels", "bytes", "oldest")


@dataclass(frozen=True)
class Candidate:
    """What a keeper policy looks at: one path of one stored content."""

    id: str
    path: str
    width: int
    height: int
    bytes: int
    format: str
    exif_datetime: datetime | None


@dataclass(frozen=True)
class Criterion:
    name: str
    score: Callable[[Candidate], tuple[float, ...]]  # higher is better
    describe: Callable[[Candidate], str]


def parse_policy(specs: Sequence[str]) -> list[Criterion]:
    """Criteria from ``--keep`` values; raises QueryError naming a bad one."""
    return [_criterion(spec) for spec in (specs or DEFAULT_POLICY)]


def pinned(paths: Collection[str]) -> Criterion:
    """Paths an analyst chose as keepers (the UI's "change keeper") win over every other rule."""
    chosen = frozenset(paths)
    return Criterion(
        "pinned", lambda c: (1.0 if c.path in chosen else 0.0,), lambda c: "chosen by an analyst"
    )


def choose_keeper(candidates: Sequence[Candidate], policy: Sequence[Criterion]) -> tuple[int, str]:
    """Index of the keeper among ``candidates`` and the reason, naming the deciding criterion."""
    if not candidates:
        raise ValueError("no candidates")
    order = sorted(
        range(len(candidates)),
        key=lambda i: (
            *[tuple(-v for v in c.score(candidates[i])) for c in policy],
            len(candidates[i].path),
            candidates[i].path,
        ),
    )
    best = order[0]
    if len(order) == 1:
        return best, "the only member"
    runner_up = candidates[order[1]]
    for criterion in policy:
        if criterion.score(candidates[best]) != criterion.score(runner_up):
            return best, criterion.describe(candidates[best])
    return best, "members tie on every criterion: shortest path kept"


def _criterion(spec: str) -> Criterion:
    name, _, argument = spec.partition(":")
    if name == "pixels" and not argument:
        return Criterion(
            spec,
            lambda c: (float(c.width * c.height),),
            lambda c: f"largest pixel count ({c.width}x{c.height})",
        )
    if name == "bytes" and not argument:
        return Criterion(
            spec, lambda c: (float(c.bytes),), lambda c: f"largest file ({c.bytes} bytes)"
        )
    if name == "oldest" and not argument:
        return Criterion(
            spec,
            lambda c: (1.0, -c.exif_datetime.timestamp()) if c.exif_datetime else (0.0, 0.0),
            lambda c: (
                f"oldest EXIF date ({c.exif_datetime:%Y-%m-%d %H:%M})"
                if c.exif_datetime
                else "oldest EXIF date"
            ),
        )
    if name == "format" and argument:
        preferred = [f.strip().upper() for f in argument.split(",") if f.strip()]
        return Criterion(
            spec,
            lambda c: (
                float(len(preferred) - preferred.index(c.format.upper()))
                if c.format.upper() in preferred
                else 0.0,
            ),
            lambda c: f"preferred format ({c.format})",
        )
    if name == "path" and argument:
        try:
            pattern = re.compile(argument)
        except re.error as exc:
            raise QueryError(f"--keep {spec!r}: bad regular expression: {exc}") from exc
        return Criterion(
            spec,
            lambda c: (1.0 if pattern.search(c.path) else 0.0,),
            lambda c: f"path matches {argument!r}",
        )
    raise QueryError(
        f"unknown keep policy {spec!r}; use pixels, bytes, oldest, format:PNG,JPEG or path:REGEX"
    )
