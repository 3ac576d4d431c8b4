"""Patch codes (services.patches, services.patch_pairs) on scikit-image's bundled photos: an
off-centre crop of a photo, resized and recompressed, shares patches with it on one placement;
other photos do not; codes that agree but are placed differently do not count; the join finds
exactly the pairs the per-pair test accepts; and the stored form round-trips."""

from __future__ import annotations

import io
from dataclasses import replace
from itertools import combinations

import numpy as np
import pytest
from PIL import Image

from services.patch_pairs import patch_pairs
from services.patches import (
    MATCH_RADIUS,
    MATCHES_NEEDED,
    PATCH_HEX_LENGTH,
    PATCHES,
    PatchCodes,
    patch_codes,
    patch_table,
    shared_patches,
)
from testkit.imagegen import sample_photos

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: image.convert("RGB") for name, image in sample_photos(PHOTOS).items()}


def off_centre_crop(image: Image.Image, removed: float, rng: np.random.Generator) -> Image.Image:
    """Cut ``removed`` of each side, a random share of it (0 to 1, not only near one side) off
    the left and the top."""
    w, h = image.size
    cut_x, cut_y = round(w * removed), round(h * removed)
    x, y = round(cut_x * rng.uniform()), round(cut_y * rng.uniform())
    return image.crop((x, y, x + w - cut_x, y + h - cut_y))


def jpeg(image: Image.Image, scale: float, quality: int) -> Image.Image:
    size = (round(image.width * scale), round(image.height * scale))
    buffer = io.BytesIO()
    image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_off_centre_crops_share_patches_with_their_original(
    photos: dict[str, Image.Image],
) -> None:
    rng = np.random.default_rng(7)
    found, tried = 0, 0
    for image in photos.values():
        original = patch_codes(image)
        assert 0 < len(original) <= PATCHES
        for removed in (0.1, 0.2, 0.25):
            copy = jpeg(off_centre_crop(image, removed, rng), rng.uniform(0.5, 1.0), 80)
            tried += 1
            found += shared_patches(original, patch_codes(copy)) >= MATCHES_NEEDED
    # No code of the whole frame or of centred windows finds these (docs/benchmarks.md); the
    # rocket, a plain sky with few blobs, keeps too few patches in a crop.
    assert found >= 0.8 * tried, f"{found} of {tried} crops found"


def test_other_photos_share_no_patches(photos: dict[str, Image.Image]) -> None:
    codes = {name: patch_codes(image) for name, image in photos.items()}
    for a, b in combinations(codes, 2):
        assert shared_patches(codes[a], codes[b]) < MATCHES_NEEDED, (a, b)


def test_agreeing_codes_must_agree_on_one_placement(photos: dict[str, Image.Image]) -> None:
    image = photos["astronaut"]
    original = patch_codes(image)
    crop = patch_codes(image.crop((40, 30, 440, 430)))
    assert shared_patches(original, crop) >= MATCHES_NEEDED
    # The same codes, each moved to another patch's place: every code still agrees, no two on
    # one placement.
    order = np.roll(np.arange(len(crop)), 1)
    moved = replace(crop, x=crop.x[order], y=crop.y[order], half=crop.half[order])
    assert shared_patches(original, moved) < MATCHES_NEEDED
    # A frame that would have to stick out of the other is no copy either.
    shifted = replace(crop, x=crop.x + 0.5)
    assert shared_patches(original, shifted) < MATCHES_NEEDED


def test_the_join_finds_what_the_pair_test_accepts(photos: dict[str, Image.Image]) -> None:
    rng = np.random.default_rng(3)
    images = list(photos.values())
    images += [off_centre_crop(photos[name], 0.2, rng) for name in ("astronaut", "coffee")]
    images += [off_centre_crop(photos[name], 0.2, rng) for name in ("chelsea", "camera")]
    images += [jpeg(image, 0.6, 70) for image in images[:3]]
    codes = [patch_codes(image) for image in images]
    table = patch_table([c.to_hex() for c in codes] + [""])  # a row without codes joins nothing
    found = patch_pairs(table, MATCH_RADIUS)
    stored = [PatchCodes.from_hex(c.to_hex()) for c in codes]
    expected = {
        (i, j): shared_patches(stored[i], stored[j])  # type: ignore[arg-type]
        for i, j in combinations(range(len(codes)), 2)
    }
    expected = {pair: n for pair, n in expected.items() if n >= MATCHES_NEEDED}
    got = dict(
        zip(zip(found.left.tolist(), found.right.tolist(), strict=True), found.shared.tolist(),
            strict=True)
    )  # fmt: skip
    assert got == expected
    assert {(0, 6), (1, 7), (2, 8), (4, 9)} <= set(got)  # every crop with its original


def test_the_stored_form_round_trips(photos: dict[str, Image.Image]) -> None:
    codes = patch_codes(photos["chelsea"])
    text = codes.to_hex()
    assert len(text) == PATCH_HEX_LENGTH
    back = PatchCodes.from_hex(text)
    assert back is not None
    assert (back.codes == codes.codes).all()
    for got, want in ((back.x, codes.x), (back.y, codes.y), (back.half, codes.half)):
        assert np.abs(got - want).max() <= 1 / 65535
    assert (back.width, back.height) == pytest.approx((codes.width, codes.height), abs=1e-4)
    assert PatchCodes.from_hex("") is None
    flat = patch_codes(Image.new("RGB", (300, 200), (90, 90, 90)))  # no blobs: none, but known
    assert len(flat) == 0 and PatchCodes.from_hex(flat.to_hex()) is not None
    table = patch_table([text, "", flat.to_hex()])
    assert table.known.tolist() == [True, False, True]
    assert (table.row == 0).sum() == len(codes) and table.row.size == len(codes)
    with pytest.raises(ValueError, match="patch_codes"):
        patch_table([text[:-2]])
