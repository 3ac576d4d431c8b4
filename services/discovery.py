"""Finding the image files under the folders a user points at.

Rules: hidden files and folders are skipped; files are taken by image extension (camera RAW
extensions included), and files without a known extension by sniffing their first bytes;
symbolic links are followed only to files inside the given roots (folder links are not
followed, so nothing is walked twice or outside); what looks like an image but cannot be one
(a broken link, a folder named ``x.jpg``) is reported with the reason, so it lands in the
job's failure list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".png",
        ".gif",
        ".bmp",
        ".webp",
        ".tif",
        ".tiff",
        ".heic",
        ".heif",
        ".avif",
    }
)
# Camera RAW formats, decoded through libraw (services.raw): DNG, Canon CR2/CR3, Nikon NEF,
# Sony ARW, Fujifilm RAF, Olympus ORF, Panasonic RW2. Taken by name: many are TIFF inside.
RAW_SUFFIXES = frozenset({".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2"})
# What the walk takes by name.
_TAKEN_SUFFIXES = IMAGE_SUFFIXES | RAW_SUFFIXES
_MAGIC = (
    b"\xff\xd8\xff",  # JPEG
    b"\x89PNG\r\n\x1a\n",
    b"GIF87a",
    b"GIF89a",
    b"BM",
    b"II*\x00",  # TIFF, little-endian
    b"MM\x00*",  # TIFF, big-endian
)


@dataclass(frozen=True)
class Found:
    """A file to ingest, or (``problem`` set) an entry that looks like an image but is not one."""

    path: Path
    problem: str | None = None


def looks_like_image(path: Path) -> bool:
    """Whether ``path``'s first bytes are an image signature we decode."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return False
    if head.startswith(_MAGIC):
        return True
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return True
    return head[4:8] == b"ftyp" and head[8:12] in {b"heic", b"heix", b"mif1", b"avif", b"heif"}


def discover(roots: Sequence[Path], *, recursive: bool = True) -> Iterator[Found]:
    """Every image file under ``roots`` (in sorted order within each folder), as absolute paths."""
    # Absolute and normalised, but links not resolved (resolve() would follow them).
    roots = [Path(os.path.abspath(root)) for root in roots]  # noqa: PTH100
    resolved_roots = [root.resolve() for root in roots]
    for root in roots:
        if root.is_symlink() and not root.exists():
            yield Found(root, "broken symbolic link")
        elif not root.exists():
            yield Found(root, "does not exist")
        elif root.is_dir():
            yield from _walk(root, resolved_roots, recursive)
        else:
            yield Found(root)


def _walk(root: Path, roots: Sequence[Path], recursive: bool) -> Iterator[Found]:
    problems: list[Found] = []

    def on_error(error: OSError) -> None:
        problems.append(
            Found(Path(error.filename or root), f"cannot list folder: {error.strerror}")
        )

    for folder, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
        here = Path(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            path = here / name
            if path.suffix.lower() in _TAKEN_SUFFIXES:
                yield Found(path, "is a folder named like an image, not an image file")
        for name in sorted(filenames):
            if not name.startswith("."):
                found = _classify(here / name, roots)
                if found is not None:
                    yield found
        yield from problems
        problems.clear()
        if not recursive:
            dirnames.clear()


def _classify(path: Path, roots: Sequence[Path]) -> Found | None:
    named_like_image = path.suffix.lower() in _TAKEN_SUFFIXES
    if path.is_symlink():
        target = path.resolve()
        if not target.exists():
            return Found(path, "broken symbolic link") if named_like_image else None
        if not any(target.is_relative_to(root) for root in roots):
            log.info("not following %s: it points outside the given folders", path)
            return None
        if target.is_dir():
            return None
    # Named like an image (decoding tells if it is one), or an image behind another name.
    if named_like_image or looks_like_image(path):
        return Found(path)
    return None
