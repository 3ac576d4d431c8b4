"""The copy-detection edits do what their names say, reproducibly; PDQ pairs equal a brute force."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import _copy_edits as edits
from testkit.imagegen import make_photo_like

BASE = make_photo_like(5, (400, 300))


def _rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


def _offset(copy: Image.Image, base: Image.Image) -> tuple[int, int]:
    """Where ``copy`` (a crop of ``base``) lies in it: the exact pixel match."""
    small, large = np.asarray(copy, np.int32), np.asarray(base, np.int32)
    for x, y in itertools.product(
        range(base.width - copy.width + 1), range(base.height - copy.height + 1)
    ):
        if np.array_equal(large[y : y + copy.height, x : x + copy.width], small):
            return x, y
    raise AssertionError("the copy is not a crop of the base")


@pytest.mark.parametrize("removed", [0.05, 0.10, 0.20, 0.25])
def test_crops_keep_the_share_of_each_side(removed: float) -> None:
    centred = edits.centred_crop(removed)(BASE, _rng())
    assert centred.size == (round(400 * (1 - removed)), round(300 * (1 - removed)))
    x, y = _offset(centred, BASE)
    assert abs(x - (400 - centred.width) / 2) <= 1 and abs(y - (300 - centred.height) / 2) <= 1
    for seed in range(4):
        off = edits.off_centre_crop(removed)(BASE, _rng(seed))
        assert off.size == centred.size
        x, y = _offset(off, BASE)
        for start, cut in ((x, 400 - off.width), (y, 300 - off.height)):
            assert min(start, cut - start) <= 0.2 * cut + 1  # most of the cut off one side


def test_bars_cover_their_share_of_the_copy() -> None:
    for seed in range(8):
        boxed = edits.letterbox(0.15)(BASE, _rng(seed))
        assert boxed.width == 400 and abs((boxed.height - 300) / boxed.height - 0.15) < 0.01
        bar = np.asarray(boxed)[:10]
        assert np.all(bar == 0) or np.all(bar == 255)
    pillar = edits.pillarbox(0.10)(BASE, _rng())
    assert pillar.height == 300 and abs((pillar.width - 400) / pillar.width - 0.10) < 0.01
    assert np.all(np.asarray(pillar)[:, :10] == 0)


def test_random_edits_are_seeded() -> None:
    for name, (edit, _kind) in edits.TRANSFORMS.items():
        first, again = edit(BASE, _rng(3)), edit(BASE, _rng(3))
        assert first.tobytes() == again.tobytes(), name
    turns = {edits.rotation(5)(BASE, _rng(seed)).tobytes() for seed in range(8)}
    assert len(turns) == 2  # +5° or -5°
    rotated = edits.rotation(5)(BASE, _rng())
    assert rotated.size == BASE.size and np.asarray(rotated)[0, 0].tolist() == [0, 0, 0]


def test_overlays_keep_the_frame_and_bars_add_to_it() -> None:
    for name in ("text overlay", "logo overlay"):
        copy = edits.TRANSFORMS[name][0](BASE, _rng())
        assert copy.size == BASE.size and copy.tobytes() != BASE.tobytes(), name
    caption = edits.caption_bar(BASE, _rng())
    assert caption.width == 400 and 300 * 1.12 <= caption.height <= 300 * 1.2 + 1


def test_pdq_pairs_equal_a_brute_force(tmp_path: Path) -> None:
    pytest.importorskip("pdqhash")
    from bench._pdq import dihedral_codes, pdq_pairs

    images = [BASE, BASE.transpose(Image.Transpose.FLIP_LEFT_RIGHT), make_photo_like(6, (400, 300))]
    paths = []
    for number, image in enumerate(images):
        paths.append(tmp_path / f"{number}.png")
        image.save(paths[-1])
    codes = [dihedral_codes(path) for path in paths]

    def distance(a: int, b: int) -> int:
        return min(int(np.bitwise_count(codes[a][k] ^ codes[b][0]).sum()) for k in range(8))

    for threshold in (0, 40, 70, 256):
        expected = {
            (str(paths[a]), str(paths[b]))
            for a, b in itertools.combinations(range(3), 2)
            if min(distance(a, b), distance(b, a)) <= threshold
        }
        assert pdq_pairs(paths, threshold) == expected, threshold
    assert (str(paths[0]), str(paths[1])) in pdq_pairs(paths, 70)  # a mirror is one of the 8
