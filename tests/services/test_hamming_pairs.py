"""All-pairs Hamming search against a brute-force numpy computation on the same codes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from services import hamming_pairs
from services.errors import QueryError
from services.hamming_pairs import PairSet, codes_from_bytes, pairs_within
from services.hashing import phash_to_int

U64 = npt.NDArray[np.uint64]


def flip_bits(code: np.uint64, count: int, rng: np.random.Generator) -> np.uint64:
    for bit in rng.choice(64, size=count, replace=False):
        code ^= np.uint64(1) << np.uint64(bit)
    return code


def planted_codes(count: int, seed: int = 0) -> U64:
    """Uniform random codes with groups of near copies (0 to 14 bits flipped) written over them."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64 - 1, size=count, dtype=np.uint64, endpoint=True)
    for _ in range(count // 10):
        base = codes[rng.integers(count)]
        for member in rng.integers(count, size=rng.integers(1, 6)):
            codes[member] = flip_bits(base, int(rng.integers(0, 15)), rng)
    return codes


def planted_variants(codes: U64, per_item: int, seed: int = 1) -> U64:
    """Random variant codes, some of them near another item's identity code."""
    rng = np.random.default_rng(seed)
    count = codes.size
    variants = rng.integers(0, 2**64 - 1, size=(count, per_item), dtype=np.uint64, endpoint=True)
    for _ in range(count // 4):
        item, other, k = rng.integers(count), rng.integers(count), rng.integers(per_item)
        variants[item, k] = flip_bits(codes[other], int(rng.integers(0, 15)), rng)
    return variants


def brute_force(codes: U64, radius: int, variants: U64 | None = None) -> PairSet:
    """Every pair from full distance matrices; ties as PairSet documents (identity, lower
    variant, left item's variant first), by updating only on a strictly smaller distance."""
    best = np.bitwise_count(codes[:, None] ^ codes[None, :]).astype(np.int64)
    variant = np.zeros(best.shape, np.int8)
    of_right = np.zeros(best.shape, np.bool_)
    per_item = 0 if variants is None else variants.shape[1]
    for k in range(per_item):
        assert variants is not None
        # forward[i, j]: variant k of item i against the identity of item j.
        forward = np.bitwise_count(variants[:, k][:, None] ^ codes[None, :]).astype(np.int64)
        for matrix, is_right in ((forward, False), (forward.T, True)):
            better = matrix < best
            best[better], variant[better], of_right[better] = matrix[better], k + 1, is_right
    left, right = np.nonzero(np.triu(best <= radius, k=1))
    return PairSet(
        left=left.astype(np.int64),
        right=right.astype(np.int64),
        distance=best[left, right].astype(np.uint8),
        variant=variant[left, right],
        variant_of_right=of_right[left, right],
    )


def assert_same(got: PairSet, expected: PairSet) -> None:
    for field in ("left", "right", "distance", "variant", "variant_of_right"):
        np.testing.assert_array_equal(getattr(got, field), getattr(expected, field), err_msg=field)
        assert getattr(got, field).dtype == getattr(expected, field).dtype, field


def sixteen_bit_plan(index_size: int, queries: int, radius: int) -> tuple[object, ...]:
    """The plan the cost model picks for a million codes at radius 10, forced on small inputs."""
    return tuple(
        hamming_pairs.Substring(48 - 16 * s, 16, t)
        for s, t in enumerate(hamming_pairs._tolerances(4, radius))
    )


@pytest.mark.parametrize("radius", [0, 3, 10])
@pytest.mark.parametrize("per_item", [0, 7])
@pytest.mark.parametrize("plan", ["cost model", "4 x 16 bits"])
def test_matches_brute_force(
    radius: int, per_item: int, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if plan == "4 x 16 bits":
        monkeypatch.setattr(hamming_pairs, "plan_substrings", sixteen_bit_plan)
    codes = planted_codes(2500)
    variants = planted_variants(codes, per_item) if per_item else None

    got = pairs_within(codes, radius, variants=variants)

    expected = brute_force(codes, radius, variants)
    assert len(expected) > 0
    assert_same(got, expected)


def test_large_radius_and_small_chunks_match_brute_force() -> None:
    codes = planted_codes(600, seed=3)
    variants = planted_variants(codes, 3, seed=4)

    got = pairs_within(codes, 16, variants=variants, chunk=37)

    assert_same(got, brute_force(codes, 16, variants))


def test_many_identical_codes_overflow_the_per_slice_buffers() -> None:
    codes = np.concatenate([np.full(300, 0x0123456789ABCDEF, np.uint64), planted_codes(100)])

    got = pairs_within(codes, 2)

    expected = brute_force(codes, 2)
    assert len(got) >= 300 * 299 // 2
    assert_same(got, expected)


def test_every_pair_at_radius_64() -> None:
    codes = planted_codes(40, seed=5)

    got = pairs_within(codes, 64)

    assert len(got) == 40 * 39 // 2
    assert_same(got, brute_force(codes, 64))


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_codes_have_no_pairs(count: int) -> None:
    codes = np.zeros(count, np.uint64)

    assert len(pairs_within(codes, 10, variants=np.zeros((count, 7), np.uint64))) == 0


def test_two_codes() -> None:
    near = np.array([0b1011, 0b0011], np.uint64)
    far = np.array([0, 2**64 - 1], np.uint64)

    pair = pairs_within(near, 1)
    assert (pair.left.tolist(), pair.right.tolist(), pair.distance.tolist()) == ([0], [1], [1])
    assert len(pairs_within(near, 0)) == 0
    assert len(pairs_within(far, 63)) == 0
    assert len(pairs_within(far, 64)) == 1


def test_a_variant_of_the_right_item_is_reported_as_such() -> None:
    codes = np.array([0, 2**64 - 1], np.uint64)
    variants = np.array([[0x00FF, 0x0F0F], [2**64 - 1, 0b111]], np.uint64)

    pair = pairs_within(codes, 4, variants=variants)

    assert pair.distance.tolist() == [3]
    assert pair.variant.tolist() == [2]  # column 1 of the right item's variants
    assert pair.variant_of_right.tolist() == [True]


def test_results_are_deterministic() -> None:
    codes = planted_codes(1500, seed=6)
    variants = planted_variants(codes, 7, seed=7)

    first = pairs_within(codes, 10, variants=variants)
    second = pairs_within(codes, 10, variants=variants, chunk=100)

    assert_same(first, second)


def test_codes_from_bytes_matches_phash_to_int() -> None:
    rng = np.random.default_rng(8)
    hashes = [rng.bytes(8) for _ in range(50)] + [bytes(8), b"\xff" * 8]

    codes = codes_from_bytes(hashes)

    assert codes.dtype == np.uint64
    assert codes.tolist() == [phash_to_int(value) for value in hashes]
    assert codes_from_bytes([]).shape == (0,)


def test_codes_from_bytes_rejects_a_wrong_length() -> None:
    with pytest.raises(QueryError, match="pHash 1 is 7 bytes"):
        codes_from_bytes([bytes(8), bytes(7), bytes(9)])


@pytest.mark.parametrize(
    ("codes", "radius", "variants", "message"),
    [
        (np.zeros(3, np.int64), 3, None, "1-D uint64"),
        (np.zeros((3, 1), np.uint64), 3, None, "1-D uint64"),
        (np.zeros(3, np.uint64), -1, None, "radius"),
        (np.zeros(3, np.uint64), 65, None, "radius"),
        (np.zeros(3, np.uint64), 3, np.zeros((2, 7), np.uint64), r"\(3, K\)"),
        (np.zeros(3, np.uint64), 3, np.zeros((3, 7), np.int64), r"\(3, K\)"),
    ],
)
def test_rejects_malformed_input(
    codes: U64, radius: int, variants: U64 | None, message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        pairs_within(codes, radius, variants=variants)
