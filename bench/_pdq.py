"""PDQ (Meta's 256-bit perceptual hash, the ``pdqhash`` package) as a reference in
bench.copy_detection: each image's 8 dihedral hashes; a pair is predicted when some flip or turn
of one is within :data:`PDQ_THRESHOLD` bits of the other (an exact scan, chunked)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

PDQ_THRESHOLD = 70  # of 256 bits, as in issue 13's table of methods
_CHUNK = 256

U64 = npt.NDArray[np.uint64]


def dihedral_codes(path: Path) -> U64:
    """The (8, 4) packed PDQ hashes of the image as displayed, identity first."""
    import pdqhash

    with Image.open(path) as opened:
        pixels = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    hashes, _quality = pdqhash.compute_dihedral(pixels)
    packed = np.packbits(np.asarray(hashes, dtype=bool), axis=1)  # (8, 32) bytes
    return packed.view(">u8").astype(np.uint64)


def pdq_pairs(paths: Sequence[Path], threshold: int) -> set[tuple[str, str]]:
    """Every pair of ``paths`` whose PDQ hashes, over the 8 flips and turns, are within
    ``threshold`` bits."""
    codes = np.stack([dihedral_codes(path) for path in paths])  # (N, 8, 4)
    identity = codes[:, 0]
    names = [str(path) for path in paths]
    found: set[tuple[str, str]] = set()
    for start in range(0, len(paths), _CHUNK):
        block = codes[start : start + _CHUNK]
        nearest = np.full((len(block), len(paths)), 256, np.int64)
        for variant in range(block.shape[1]):
            xor = block[:, variant, None, :] ^ identity[None, :, :]
            distance = np.bitwise_count(xor).sum(axis=2, dtype=np.int64)
            np.minimum(nearest, distance, out=nearest)
        rows, cols = np.nonzero(nearest <= threshold)
        for row, col in zip((rows + start).tolist(), cols.tolist(), strict=True):
            if row != col:
                found.add((names[min(row, col)], names[max(row, col)]))
    return found
