"""Pair precision/recall against labelled groups, with answers counted by hand or by brute force."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.dedup import near_links
from services.errors import QueryError
from services.evaluation import (
    EvalItem,
    ThresholdResult,
    best_f1,
    dedup_pairs,
    evaluate,
    evaluate_clip,
    evaluate_dedup,
    items_from_records,
    load_ground_truth,
    normalise_path,
    pr_curve_png,
    score_pairs,
)
from services.frames import frame_codes
from services.hashing import hamming, int_to_phash, phash_variants
from services.records import ImageRecord
from testkit.imagegen import make_photo_like, sample_photos


def _item(path: str, code: int, clip: list[float] | None = None) -> EvalItem:
    vector = None if clip is None else np.asarray(clip, np.float32)
    return EvalItem(path=path, phash=int_to_phash(code), clip=vector)


# a, b, c are one group (b: 3 bits off a, c: 6 bits off a, 3 off b); d, e another (1 bit apart);
# f is alone, 5 bits off a (8 off b, 11 off c). d and e are >= 27 bits from everything else.
PLANTED = [
    _item("a", 0),
    _item("b", 0x7),
    _item("c", 0x3F),
    _item("d", 0xFFFF_FFFF_0000_0000),
    _item("e", 0xFFFF_FFFF_0000_0001),
    _item("f", 0x1F << 40),
    _item("unlabelled", 0x1),  # 1 bit from a but not in the ground truth: never counted
]
TRUTH = {"a": "g1", "b": "g1", "c": "g1", "d": "g2", "e": "g2", "f": "g3"}


@pytest.mark.parametrize(
    ("radius", "tp", "fp", "fn"),
    [(0, 0, 0, 4), (1, 1, 0, 3), (3, 3, 0, 1), (5, 3, 1, 1), (6, 4, 1, 0), (8, 4, 2, 0)],
)
def test_counts_at_each_radius_match_the_hand_count(radius: int, tp: int, fp: int, fn: int) -> None:
    (result,) = evaluate(PLANTED, TRUTH, [radius])
    assert (result.tp, result.fp, result.fn) == (tp, fp, fn)
    assert result.precision == pytest.approx(tp / (tp + fp) if tp + fp else 1.0)
    assert result.recall == pytest.approx(tp / 4)


def test_scores_and_best_f1() -> None:
    results = evaluate(PLANTED, TRUTH, range(9))
    assert [r.threshold for r in results] == list(range(9))
    at_six = results[6]
    assert (at_six.precision, at_six.recall) == (pytest.approx(0.8), 1.0)
    assert at_six.f1 == pytest.approx(2 * 0.8 / 1.8)
    assert results[0].f1 == 0.0 and results[0].precision == 1.0
    # F1 at r=3 (P 1, R .75) is .857; at r=6 (P .8, R 1) .889: r=6 is the best.
    assert best_f1(results).threshold == 6


def test_exact_copies_under_several_paths_pair_at_distance_zero() -> None:
    record = ImageRecord(
        id="x", path="/p/one.jpg", paths=("/p/two.jpg",), phash=bytes(8), width=1, height=1,
        format="JPEG", bytes=1,
    )  # fmt: skip
    items = items_from_records([record], normalise=False)
    assert [i.path for i in items] == ["/p/one.jpg", "/p/two.jpg"]
    (same,) = evaluate(items, {"/p/one.jpg": "g", "/p/two.jpg": "g"}, [0])
    assert (same.tp, same.fp, same.fn) == (1, 0, 0)
    (apart,) = evaluate(items, {"/p/one.jpg": "g", "/p/two.jpg": "h"}, [0])
    assert (apart.tp, apart.fp, apart.fn) == (0, 1, 0)


def test_labelled_images_missing_from_the_collection_are_not_counted() -> None:
    (result,) = evaluate(PLANTED[:2], TRUTH, [3])  # only a and b evaluated
    assert (result.tp, result.fp, result.fn) == (1, 0, 0)


def test_flipped_copies_are_found_through_the_variants() -> None:
    photo = make_photo_like(3)
    other = make_photo_like(4)
    items = [
        EvalItem(name, (v := phash_variants(image))[0], tuple(v[1:]))
        for name, image in (
            ("photo", photo),
            ("mirror", photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
            ("other", other),
        )
    ]
    truth = {"photo": "p", "mirror": "p", "other": "o"}
    assert hamming(items[0].phash, items[1].phash) > 8  # identity alone does not see it
    (with_variants,) = evaluate(items, truth, [8])
    assert (with_variants.tp, with_variants.fn) == (1, 0)
    identity_only = [EvalItem(i.path, i.phash) for i in items]
    (without,) = evaluate(identity_only, truth, [8])
    assert (without.tp, without.fn) == (0, 1)


def test_counts_equal_a_brute_force_scan() -> None:
    rng = np.random.default_rng(7)
    bases = rng.integers(0, 2**63, size=12, dtype=np.int64).astype(np.uint64)
    items, truth = [], {}
    for number in range(60):
        group = number % 12
        flips = rng.choice(64, size=int(rng.integers(0, 14)), replace=False)
        code = int(bases[group]) ^ sum(1 << int(bit) for bit in flips)
        items.append(EvalItem(f"i{number}", int_to_phash(code)))
        truth[f"i{number}"] = f"g{group}"
    radii = list(range(17))
    results = evaluate(items, truth, radii)
    for radius, result in zip(radii, results, strict=True):
        tp = fp = fn = 0
        for x, y in itertools.combinations(items, 2):
            near = hamming(x.phash, y.phash) <= radius
            same = truth[x.path] == truth[y.path]
            tp, fp, fn = tp + (near and same), fp + (near and not same), fn + (same and not near)
        assert (result.tp, result.fp, result.fn) == (tp, fp, fn), radius


def test_clip_sweep_counts_pairs_at_or_above_each_cosine() -> None:
    items = [
        _item("a", 0, [1.0, 0.0]),
        _item("b", 0, [0.95, np.sqrt(1 - 0.95**2)]),  # cosine .95 with a
        _item("c", 0, [0.0, 1.0]),  # cosine .312 with b, 0 with a
    ]
    truth = {"a": "g", "b": "g", "c": "h"}
    high, low = evaluate_clip(items, truth, [0.9, 0.3])
    assert (high.tp, high.fp, high.fn, high.signal) == (1, 0, 0, "clip")
    assert (low.tp, low.fp, low.fn) == (1, 1, 0)
    with pytest.raises(QueryError, match="no CLIP vector"):
        evaluate_clip([_item("a", 0), *items[1:]], truth)


def test_score_pairs_of_an_external_method() -> None:
    result = score_pairs([("a", "b"), ("b", "a"), ("a", "f"), ("a", "x")], TRUTH, 10, "other")
    assert (result.tp, result.fp, result.fn) == (1, 1, 3)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "truth.csv"
    path.write_text(text)
    return path


def test_ground_truth_paths_are_taken_from_the_csv_folder(tmp_path: Path) -> None:
    truth = load_ground_truth(_write(tmp_path, "filename,group_id\na.jpg,0\nsub/b.jpg,0\n\n"))
    assert truth == {
        normalise_path(str(tmp_path / "a.jpg")): "0",
        normalise_path(str(tmp_path / "sub" / "b.jpg")): "0",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("name,group\na.jpg,1\n", "no 'path' column"),
        ("path,kind\na.jpg,1\n", "no 'group' column"),
        ("path,group\n", "no rows"),
        ("path,group\na.jpg,1\n./a.jpg,2\n", "line 3: duplicate path ./a.jpg"),
        ("path,group\na.jpg\n", "line 2: expected path and group"),
        ("path,group\na.jpg, \n", "line 2: empty path or group"),
    ],
)
def test_bad_ground_truth_is_refused_with_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(QueryError, match=message):
        load_ground_truth(_write(tmp_path, text))


def test_missing_ground_truth_file(tmp_path: Path) -> None:
    with pytest.raises(QueryError, match="cannot read ground truth"):
        load_ground_truth(tmp_path / "nope.csv")


def test_pr_curve_png_is_written(tmp_path: Path) -> None:
    phash = evaluate(PLANTED, TRUTH)
    other = [ThresholdResult.of(10, 2, 1, 2, "other")]
    target = pr_curve_png({"lookalike": phash, "other": other}, tmp_path / "out" / "pr.png")
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    single = pr_curve_png(phash, tmp_path / "single.png")
    assert single.stat().st_size > 1000


def _signals(path: str, image: Image.Image) -> EvalItem:
    """An item with the signals ingestion stores: pHash, its 7 variants, the frame codes."""
    variants = phash_variants(image)
    return EvalItem(path, variants[0], tuple(variants[1:]), frames=frame_codes(image))


def _centred_crop(image: Image.Image, keep: float) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
    return image.crop((dx, dy, w - dx, h - dy))


@pytest.fixture(scope="module")
def framed_items() -> list[EvalItem]:
    photos = {
        n: i.convert("RGB") for n, i in sample_photos(("astronaut", "coffee", "chelsea")).items()
    }
    items = [_signals(name, image) for name, image in photos.items()]
    items.append(_signals("astronaut crop", _centred_crop(photos["astronaut"], 0.9)))
    items.append(_signals("coffee crop", _centred_crop(photos["coffee"], 0.8)))
    return items


FRAMED_TRUTH = {
    "astronaut": "a",
    "astronaut crop": "a",
    "coffee": "c",
    "coffee crop": "c",
    "chelsea": "k",
}


def test_a_crop_is_found_by_the_frame_rules_and_not_by_the_phash(
    framed_items: list[EvalItem],
) -> None:
    original, crop = framed_items[0], framed_items[3]
    assert min(hamming(crop.phash, v) for v in (original.phash, *original.variants)) > 8
    (phash_only,) = evaluate(framed_items, FRAMED_TRUTH, [8])
    assert (phash_only.tp, phash_only.fp, phash_only.fn) == (0, 0, 2)
    (with_frames,) = evaluate_dedup(framed_items, FRAMED_TRUTH, [8])
    assert (with_frames.tp, with_frames.fp, with_frames.fn) == (2, 0, 0)
    assert with_frames.signal == "phash+frames"
    # Without frame codes an item matches by its whole frame only: the pHash-only answer.
    bare = [EvalItem(i.path, i.phash, i.variants) for i in framed_items]
    for a, b in zip(evaluate_dedup(bare, FRAMED_TRUTH), evaluate(bare, FRAMED_TRUTH), strict=True):
        assert (a.tp, a.fp, a.fn) == (b.tp, b.fp, b.fn), a.threshold


def test_dedup_pairs_are_the_pairs_dedup_links_at_each_radius(
    framed_items: list[EvalItem],
) -> None:
    records = [
        ImageRecord(
            id=str(k), path=i.path, phash=i.phash, width=1, height=1, format="JPEG", bytes=1,
            phash_dihedral=i.variants, frames=i.frames,
        )
        for k, i in enumerate(framed_items)
    ]  # fmt: skip
    results = evaluate_dedup(framed_items, FRAMED_TRUTH, range(17))
    for radius, result in zip(range(17), results, strict=True):
        left, right = dedup_pairs(framed_items, radius)
        pairs = set(zip(left.tolist(), right.tolist(), strict=True))
        assert pairs == set(near_links(records, radius, None)), radius
        same = sum(FRAMED_TRUTH[records[a].path] == FRAMED_TRUTH[records[b].path] for a, b in pairs)
        assert (result.tp, result.fp) == (same, len(pairs) - same), radius
    assert results[8].tp == 2  # not vacuous: both crops are linked at the default radius
