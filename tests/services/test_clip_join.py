"""The CLIP pair join against a brute-force numpy computation on generated vectors."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

import services.clip_join as clip_join_module
from services.clip_join import clip_join, exact_join, ivf_join, normalise_in_place, normalised

MIN_COSINE = 0.95


def planted(count: int, copies: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Random unit vectors; the last ``copies`` are noisy copies of earlier ones (cosine about
    0.93 to 0.999, so some fall just under the threshold)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, 512), dtype=np.float32)
    sources = rng.integers(0, count - copies, copies)
    noise = rng.uniform(0.05, 0.36, (copies, 1)).astype(np.float32)
    vectors[count - copies :] = vectors[sources] + noise * rng.standard_normal(
        (copies, 512), dtype=np.float32
    )
    return normalised(vectors)


def brute_force(vectors: npt.NDArray[np.float32]) -> set[tuple[int, int]]:
    sims = vectors @ vectors.T
    rows, cols = np.nonzero(np.triu(sims >= MIN_COSINE, k=1))
    return set(zip(rows.tolist(), cols.tolist(), strict=True))


def test_ivf_join_finds_the_brute_force_pairs_and_no_others() -> None:
    vectors = planted(12_000, 1_200)
    reference = brute_force(vectors)
    found = list(ivf_join(vectors, MIN_COSINE))
    pairs = [pair for pair, _ in found]
    assert pairs == sorted(set(pairs))  # each pair once, in (i, j) order
    assert len(reference) > 1_000
    assert len(reference & set(pairs)) / len(reference) >= 0.99
    for (i, j), cosine in found:
        assert i < j and cosine >= MIN_COSINE
        assert abs(cosine - float(vectors[i] @ vectors[j])) < 1e-5


def test_small_collections_are_joined_exactly() -> None:
    vectors = planted(3_000, 300)
    found = list(clip_join(vectors, MIN_COSINE))
    assert found == list(exact_join(vectors, MIN_COSINE))
    assert {pair for pair, _ in found} == brute_force(vectors)


def test_fewer_than_two_vectors_have_no_pairs() -> None:
    one = planted(2, 1)[:1]
    assert list(ivf_join(one, MIN_COSINE)) == []
    assert list(clip_join(one, MIN_COSINE, exact_below=0)) == []


def test_the_ivf_join_does_not_depend_on_its_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells and their probers larger than one block are split over several products; the
    pairs stay the same (here every cell spans several blocks of 40), their cosines equal up
    to float rounding."""
    vectors = planted(6_000, 600, seed=3)
    whole = list(ivf_join(vectors, MIN_COSINE))
    monkeypatch.setattr(clip_join_module, "_BLOCK", 40)
    split = list(ivf_join(vectors, MIN_COSINE))
    assert [pair for pair, _ in split] == [pair for pair, _ in whole]
    assert max(abs(a - b) for (_, a), (_, b) in zip(split, whole, strict=True)) < 1e-5
    assert len(whole) > 300


def test_normalising_in_blocks_equals_normalising_at_once() -> None:
    rows = np.random.default_rng(4).standard_normal((50, 16)).astype(np.float32)
    rows[7] = 0.0
    expected = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    blocked = normalise_in_place(rows.copy(), block=7)
    np.testing.assert_allclose(blocked, expected, rtol=1e-6)
    assert not blocked[7].any()
