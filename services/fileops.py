"""Moving duplicates into a quarantine folder, or deleting them, safely.

Moves keep each file's path relative to the common folder of everything moved in one run; a
target never lies outside the quarantine folder (no ``..``, no symbolic link on the way) and an
existing file is never overwritten: such a file is skipped and reported, not moved. The same
holds when a quarantined file is restored to where it came from (:func:`restore`).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileAction:
    """What happened to one file: ``target`` for a move, ``error`` when nothing happened."""

    path: str
    target: str | None = None
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.error is None


def move_into(paths: Sequence[str], quarantine: Path) -> list[FileAction]:
    """Move ``paths`` under ``quarantine``, keeping their layout below their common folder."""
    if not paths:
        return []
    quarantine = Path(os.path.abspath(quarantine))  # noqa: PTH100 - normalise, do not resolve links
    if quarantine.is_symlink():
        return [FileAction(p, error=f"{quarantine} is a symbolic link; refusing") for p in paths]
    clean = [p for p in paths if _is_clean(p)]
    base = Path(os.path.commonpath([str(Path(p).parent) for p in clean])) if clean else Path("/")
    actions = []
    for path in paths:
        if path not in clean:
            actions.append(FileAction(path, error="not an absolute, normalised path; refusing"))
            continue
        actions.append(_move_one(Path(path), quarantine / Path(path).relative_to(base), quarantine))
    return actions


def delete(paths: Sequence[str]) -> list[FileAction]:
    actions = []
    for path in paths:
        try:
            Path(path).unlink()
            actions.append(FileAction(path))
        except OSError as exc:
            actions.append(FileAction(path, error=f"cannot delete: {exc.strerror}"))
    return actions


def _is_clean(path: str) -> bool:
    candidate = Path(path)
    return (
        candidate.is_absolute() and ".." not in candidate.parts and os.path.normpath(path) == path
    )


def _move_one(source: Path, target: Path, quarantine: Path) -> FileAction:
    if not source.is_file() or source.is_symlink():
        return FileAction(str(source), error="not a regular file (missing, a link, or a folder)")
    problem = _unsafe_target(target, quarantine)
    if problem:
        return FileAction(str(source), error=problem)
    target.parent.mkdir(parents=True, exist_ok=True)
    problem = _unsafe_target(target, quarantine)  # again: mkdir may have raced with a link
    if problem:
        return FileAction(str(source), error=problem)
    problem = _move_exclusive(source, target)
    if problem:
        return FileAction(str(source), error=problem)
    log.info("moved %s to %s", source, target)
    return FileAction(str(source), target=str(target))


def restore(quarantined: Path, original: Path) -> FileAction:
    """Move a quarantined file back to ``original`` (its folders made again), never over a file
    that is there now. The action's ``path`` is the original path, ``target`` where it came from."""
    if not quarantined.is_file() or quarantined.is_symlink():
        return FileAction(str(original), error=f"{quarantined} is gone (or not a regular file)")
    if original.exists() or original.is_symlink():
        return FileAction(str(original), error=f"{original} exists; not overwritten")
    try:
        original.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return FileAction(str(original), error=f"cannot make {original.parent}: {exc.strerror}")
    problem = _move_exclusive(quarantined, original)
    if problem:
        return FileAction(str(original), error=problem)
    log.info("restored %s from %s", original, quarantined)
    return FileAction(str(original), target=str(quarantined))


def _move_exclusive(source: Path, target: Path) -> str | None:
    """Move ``source`` to ``target`` unless ``target`` exists; why not, or None when moved."""
    try:
        # A hard link fails if the target exists: the no-overwrite check and the move are atomic.
        os.link(source, target)
        source.unlink()
    except FileExistsError:
        return f"{target} exists; not overwritten"
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            return f"cannot move: {exc.strerror}"
        try:  # another filesystem: copy to a new file (exclusive create), then remove
            with source.open("rb") as reader, target.open("xb") as writer:
                shutil.copyfileobj(reader, writer)
            shutil.copystat(source, target)
            source.unlink()
        except FileExistsError:
            return f"{target} exists; not overwritten"
    return None


def _unsafe_target(target: Path, quarantine: Path) -> str | None:
    """Why ``target`` would escape ``quarantine`` or overwrite a file; None when safe."""
    if target.exists() or target.is_symlink():
        return f"{target} exists; not overwritten"
    current = quarantine
    for part in target.relative_to(quarantine).parts[:-1]:
        current = current / part
        if current.is_symlink():
            return f"{current} is a symbolic link inside the quarantine folder; refusing"
    resolved = Path(os.path.realpath(target.parent))
    if not resolved.is_relative_to(Path(os.path.realpath(quarantine))):
        return f"{target} would land outside {quarantine}; refusing"
    return None
