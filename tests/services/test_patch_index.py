"""The in-process index of stored patch codes (services.patch_index) against the join of
whole-collection dedup (services.patch_pairs): the same pairs, through every tier of the code
index; rows no longer alive are never returned."""

from __future__ import annotations

import numpy as np
from PIL import Image

from services.code_index import CodeIndex
from services.patch_index import StoredPatches
from services.patch_pairs import patch_pairs
from services.patches import MATCH_RADIUS, join_tables, patch_codes, patch_table
from testkit.imagegen import make_photo_like


def off_centre_crop(image: Image.Image, removed: float, rng: np.random.Generator) -> Image.Image:
    w, h = image.size
    cut_x, cut_y = round(w * removed), round(h * removed)
    x, y = round(cut_x * rng.uniform()), round(cut_y * rng.uniform())
    return image.crop((x, y, x + w - cut_x, y + h - cut_y))


def test_the_index_finds_the_pairs_the_join_finds() -> None:
    rng = np.random.default_rng(3)
    images = [make_photo_like(seed, (192, 144)) for seed in range(180)]
    stored = [patch_codes(image).to_hex() for image in images]
    stored[5] = ""  # a row whose codes are unknown
    queries = [patch_codes(off_centre_crop(images[i], 0.2, rng)).to_hex() for i in range(0, 60, 2)]
    queries += [stored[7], ""]
    alive = np.ones(len(stored), np.bool_)

    def is_alive(rows: np.ndarray) -> np.ndarray:
        return alive[rows]

    index = StoredPatches(CodeIndex(MATCH_RADIUS))
    for start in range(0, len(stored), 45):  # tail, delta and main segments all hold some
        chunk = stored[start : start + 45]
        index.add(np.arange(start, start + len(chunk)), patch_table(chunk), alive=is_alive)
    query_table = patch_table(queries)

    def expected() -> set[tuple[int, int]]:
        joined = patch_pairs(join_tables([patch_table(stored), query_table]), MATCH_RADIUS)
        return {
            (int(right) - len(stored), int(left))
            for left, right in zip(joined.left, joined.right, strict=True)
            if left < len(stored) <= right and alive[left]
        }

    found = index.near(query_table, alive=is_alive)
    pairs = set(zip(found.query.tolist(), found.row.tolist(), strict=True))
    assert pairs == expected()
    crops_found = {q for q, row in pairs if row == 2 * q}
    assert len(crops_found) >= 0.7 * 30, f"{len(crops_found)} of 30 crops found"
    assert (len(queries) - 2, 7) in pairs  # an image stored, arriving again

    alive[[2 * q for q in list(crops_found)[:5]]] = False
    again = index.near(query_table, alive=is_alive)
    assert set(zip(again.query.tolist(), again.row.tolist(), strict=True)) == expected()
    assert len(again.query) == len(found.query) - 5
