"""Folders of generated images for ingestion tests (fast to write, distinct by construction)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from testkit.imagegen import make_photo_like


def photo_folder(root: Path, count: int, *, size: tuple[int, int] = (160, 120)) -> list[Path]:
    """``count`` distinct photo-like JPEGs."""
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = root / f"photo_{i:04d}.jpg"
        make_photo_like(10_000 + i, size).save(path, quality=90)
        paths.append(path)
    return paths


def heavy_folder(root: Path, count: int, *, size: tuple[int, int] = (1400, 1000)) -> list[Path]:
    """``count`` distinct PNGs, slow to decode (noise does not compress): batches take a while."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        pixels = base.copy()
        pixels[: 40 + i, : 40 + i] = (i * 37) % 256  # a different corner makes each distinct
        path = root / f"heavy_{i:04d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        paths.append(path)
    return paths


def copy_exact(paths: list[Path], folder: Path) -> list[Path]:
    """Byte-identical copies under another folder."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = []
    for path in paths:
        target = folder / f"copy_of_{path.name}"
        shutil.copyfile(path, target)
        copies.append(target)
    return copies


def mirror_copies(paths: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    mirrored = []
    for path in paths:
        target = folder / f"mirror_of_{path.name}"
        with Image.open(path) as image:
            image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, quality=90)
        mirrored.append(target)
    return mirrored
