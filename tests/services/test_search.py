"""Hybrid search on a real Milvus Lite server equals a brute-force numpy computation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from services.errors import FilterError, QueryError
from services.filters import Condition, eq, has_tag
from services.records import ImageRecord
from services.search import QuerySignals, SearchQuery, search
from services.store import MilvusStore
from tests.conftest import StoreFactory
from tests.records import random_records, unit_vectors

pytestmark = pytest.mark.integration

N_ROWS = 3000
DIM = 32


@pytest.fixture(scope="module")
def populated(milvus_uri: str) -> tuple[MilvusStore, list[ImageRecord]]:
    from services.schema import SchemaContract

    store = MilvusStore.connect(milvus_uri, "search_bruteforce", SchemaContract.current("m", DIM))
    store.drop()
    store = MilvusStore.connect(milvus_uri, "search_bruteforce", SchemaContract.current("m", DIM))
    records = random_records(N_ROWS, dim=DIM, seed=7, groups=40)
    for start in range(0, N_ROWS, 500):
        store.upsert(records[start : start + 500])
    assert store.count() == N_ROWS
    return store, records


def _matches(record: ImageRecord, where: list[Condition]) -> bool:
    """The reference semantics of the conditions used below, in plain Python."""
    for cond in where:
        value = getattr(record, cond.field)
        if cond.op == "contains":
            ok = cond.value in value
        elif cond.op == "==":
            ok = value == cond.value
        elif cond.op == ">=":
            ok = value >= cond.value
        elif cond.op == "in":
            assert isinstance(cond.value, tuple)
            ok = value in cond.value
        else:
            raise AssertionError(cond.op)
        if not ok:
            return False
    return True


def _hamming(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def _brute_hybrid(records, variants, vector, radius, where, top_k):  # type: ignore[no-untyped-def]
    rows = []
    for record in records:
        if not _matches(record, where):
            continue
        distance = min(_hamming(record.phash, v) for v in variants)
        if distance > radius:
            continue
        cosine = float(
            np.dot(record.clip, vector) / (np.linalg.norm(record.clip) * np.linalg.norm(vector))
        )
        rows.append((-cosine, distance, record.id, cosine))
    rows.sort()
    return [(r[2], r[3], r[1]) for r in rows[:top_k]]


@pytest.mark.parametrize(
    ("radius", "where"),
    [
        (6, []),
        (10, [eq("source", "phone")]),
        (12, [has_tag("cat"), Condition("width", ">=", 1000)]),
        (9, [Condition("format", "in", ("PNG", "WEBP")), eq("has_gps", True)]),
        (0, []),
        (16, []),  # beyond WHOLE_HITS_MAX_HAMMING: light hits, then the top rows read whole
    ],
)
def test_hybrid_equals_brute_force(populated, radius: int, where: list[Condition]) -> None:  # type: ignore[no-untyped-def]
    store, records = populated
    rng = np.random.default_rng(radius)
    for trial in range(3):
        anchor = records[int(rng.integers(0, N_ROWS))]
        # Variants: the anchor's hash and two unrelated ones, as flips/rotations would give.
        variants = (
            anchor.phash,
            records[trial + 1].phash,
            bytes(rng.integers(0, 256, 8, dtype=np.uint8)),
        )
        vector = unit_vectors(rng, 1, DIM)[0]
        query = SearchQuery(
            signals=QuerySignals(variants, vector), where=tuple(where), max_hamming=radius, top_k=40
        )
        result = search(store, None, query)
        expected = _brute_hybrid(records, variants, vector, radius, where, 40)
        got = [(h.id, h.cosine, h.hamming) for h in result.hits]
        assert result.mode == "hybrid"
        assert [g[0] for g in got] == [e[0] for e in expected]
        assert [g[2] for g in got] == [e[2] for e in expected]
        np.testing.assert_allclose([g[1] for g in got], [e[1] for e in expected], atol=1e-6)
        by_id = {r.id: r for r in records}
        for hit in result.hits:  # hits are whole rows: every path and tag, as stored
            stored = by_id[hit.id]
            assert (hit.record.all_paths, hit.record.tags, hit.record.source) == (
                stored.all_paths,
                stored.tags,
                stored.source,
            )
        assert expected, (
            "the trial should find something (the anchor itself at least, unless filtered)"
            if not where
            else True
        )


@pytest.mark.parametrize("candidate_limit", [16384, 60])
def test_filter_after_the_hamming_stage_or_in_milvus_same_answer(  # type: ignore[no-untyped-def]
    populated, candidate_limit: int
) -> None:
    """Within radius 12 the filter runs on the range search's hits, in process; when the
    unfiltered hits reach the candidate limit the search falls back to the filter in Milvus.
    Both equal the brute-force answer."""
    store, records = populated
    where = (eq("source", "phone"), Condition("width", ">=", 900))
    anchor = records[11]
    variants = (anchor.phash, records[12].phash, records[13].phash)
    vector = unit_vectors(np.random.default_rng(5), 1, DIM)[0]
    unfiltered = store.search_phash(variants, 12, "", 16384, whole=True)
    assert len(unfiltered) > 60, "the fallback case needs more unfiltered hits than its limit"
    query = SearchQuery(
        signals=QuerySignals(variants, vector),
        where=where,
        max_hamming=12,
        top_k=500,
        candidate_limit=candidate_limit,
    )
    result = search(store, None, query)
    expected = _brute_hybrid(records, variants, vector, 12, list(where), 500)
    assert len(expected) < 60, "the filtered answer must fit the smaller limit"
    assert [h.id for h in result.hits] == [e[0] for e in expected]
    assert ("filter_ms" in result.stage_ms) is (candidate_limit > len(unfiltered))
    assert not result.truncated


def test_phash_only_orders_by_hamming(populated) -> None:  # type: ignore[no-untyped-def]
    store, records = populated
    anchor = records[123]
    result = search(
        store,
        None,
        SearchQuery(signals=QuerySignals((anchor.phash,), None), max_hamming=8, top_k=500),
    )
    expected = sorted(
        (_hamming(r.phash, anchor.phash), r.id)
        for r in records
        if _hamming(r.phash, anchor.phash) <= 8
    )
    assert result.mode == "phash"
    assert [(h.hamming, h.id) for h in result.hits] == expected[:500]
    assert result.hits[0].id == anchor.id and result.hits[0].hamming == 0


@pytest.mark.parametrize("where", [[], [eq("camera_make", "Canon"), has_tag("dog")]])
def test_clip_search_equals_brute_force(populated, where: list[Condition]) -> None:  # type: ignore[no-untyped-def]
    store, records = populated
    rng = np.random.default_rng(99)
    for _ in range(5):
        vector = unit_vectors(rng, 1, DIM)[0]
        result = search(
            store,
            None,
            SearchQuery(
                signals=QuerySignals(None, vector), where=tuple(where), max_hamming=None, top_k=25
            ),
        )
        eligible = [r for r in records if _matches(r, where)]
        matrix = np.stack([r.clip for r in eligible])
        cosines = matrix @ vector
        order = np.argsort(-cosines, kind="stable")[:25]
        assert [h.id for h in result.hits] == [eligible[i].id for i in order]
        np.testing.assert_allclose([h.cosine for h in result.hits], cosines[order], atol=1e-5)
        assert [(h.record.all_paths, h.record.tags) for h in result.hits] == [
            (eligible[i].all_paths, eligible[i].tags) for i in order
        ]


def test_neighbours_by_id_exclude_the_image_itself(populated) -> None:  # type: ignore[no-untyped-def]
    store, records = populated
    anchor = records[42]
    hybrid = search(store, None, SearchQuery(id=anchor.id, max_hamming=10, top_k=30))
    expected = _brute_hybrid(
        [r for r in records if r.id != anchor.id], [anchor.phash], anchor.clip, 10, [], 30
    )
    assert [h.id for h in hybrid.hits] == [e[0] for e in expected]
    clip_only = search(store, None, SearchQuery(id=anchor.id, max_hamming=None, top_k=10))
    assert anchor.id not in {h.id for h in clip_only.hits} and len(clip_only.hits) == 10


def test_hostile_filter_values_are_literals(make_store: StoreFactory) -> None:
    store = make_store(clip_dim=8)
    records = random_records(6, dim=8)
    hostile = 'x" or id != "'
    records[0] = replace(records[0], source=hostile)
    store.upsert(records)
    for value, expected in [
        (hostile, {records[0].id}),
        ("x", set()),
        ('x\\" or 1==1 or \\"', set()),
    ]:
        result = search(
            store,
            None,
            SearchQuery(
                signals=QuerySignals(None, records[0].clip),
                where=(eq("source", value),),
                max_hamming=None,
                top_k=10,
            ),
        )
        assert {h.id for h in result.hits} == expected


def test_bad_queries_rejected_before_milvus(populated) -> None:  # type: ignore[no-untyped-def]
    store, _ = populated
    vector = np.ones(DIM, dtype=np.float32)
    with pytest.raises(FilterError, match="unknown filter field"):
        search(store, None, SearchQuery(signals=QuerySignals(None, vector), where=(eq("nope", 1),)))
    with pytest.raises(QueryError, match="exactly one"):
        search(store, None, SearchQuery(text="a", id="b"))
    with pytest.raises(QueryError, match=r"0\.\.63"):
        search(store, None, SearchQuery(signals=QuerySignals((b"\0" * 8,), None), max_hamming=64))
    with pytest.raises(QueryError, match="shape"):
        search(
            store,
            None,
            SearchQuery(signals=QuerySignals(None, np.ones(3, np.float32)), max_hamming=None),
        )
    with pytest.raises(QueryError, match="no stored image"):
        search(store, None, SearchQuery(id="0" * 64))
    with pytest.raises(QueryError, match="8 bytes"):
        search(store, None, SearchQuery(signals=QuerySignals((b"\0" * 7,), None), max_hamming=3))
    with pytest.raises(QueryError, match="text search needs a CLIP model"):
        search(store, None, SearchQuery(text="a cat"))


def test_bordered_and_larger_copies_are_found_by_their_frame_codes(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    from PIL import Image

    from services.pipeline import analyze_batch, load_for_signals
    from testkit.imagegen import sample_photos

    store = make_store(clip_dim=None)
    photos = sample_photos(("coffee", "chelsea", "rocket", "astronaut"))
    paths = []
    for name, photo in photos.items():
        paths.append(tmp_path / f"{name}.jpg")
        photo.convert("RGB").save(paths[-1], "JPEG", quality=90)
    outcome = analyze_batch(paths, None, max_pixels=10**8)
    store.upsert(outcome.records)
    coffee = photos["coffee"].convert("RGB")
    # A letterboxed copy (black bars, 15% of the height each) and a copy with more around it
    # (the stored image is its centred 80% window: the stored one is a crop of it).
    bar = round(coffee.height * 0.15)
    boxed = Image.new("RGB", (coffee.width, coffee.height + 2 * bar))
    boxed.paste(coffee, (0, bar))
    wider = coffee.resize((round(coffee.width / 0.8), round(coffee.height / 0.8)))
    wider.paste(coffee, ((wider.width - coffee.width) // 2, (wider.height - coffee.height) // 2))
    coffee_id = outcome.records[0].id
    for number, copy in enumerate((boxed, wider)):
        path = tmp_path / f"copy{number}.jpg"
        copy.save(path, "JPEG", quality=85)
        image = load_for_signals(path, max_pixels=10**8, embedder=None).image
        found = search(store, None, SearchQuery(image=image, max_hamming=8))
        assert [hit.id for hit in found.hits] == [coffee_id], number
        plain = search(store, None, SearchQuery(image=image, max_hamming=8, frames=False))
        assert coffee_id not in [hit.id for hit in plain.hits], number


@pytest.mark.parametrize("model", ["hash-only", "tiny-clip"])
def test_an_off_centre_crop_finds_its_original_by_their_patch_codes(
    make_store: StoreFactory, tmp_path: Path, redis_url: str, tiny_clip_dir: Path, model: str
) -> None:
    """A crop of a fifth of each side, nearly all off one corner, halved and recompressed: no
    whole-frame or centred-window code meets its original. With an index of the stored patch
    codes (the UI's) the Hamming stage takes the original by its patches; filters still apply;
    a stored crop's own patch codes find it by id. With a (tiny, saved) CLIP model, as users run
    it, the patches' hits are reranked by cosine with the others."""
    from services.arrival_index import ArrivalCodes, ArrivalIndex
    from services.code_feed import RedisCodeFeed
    from services.embed import ClipEmbedder
    from services.patches import MATCH_RADIUS
    from services.pipeline import analyze_batch, load_for_signals
    from testkit.imagegen import off_centre_cut, sample_photos

    embedder = None
    store = make_store(clip_model=None, clip_dim=None)
    if model == "tiny-clip":
        embedder = ClipEmbedder.load(str(tiny_clip_dir), device="cpu", precision="fp32")
        store = make_store(clip_model="tiny-clip", clip_dim=embedder.dim)
    photos = sample_photos(("coffee", "chelsea"))
    coffee = photos["coffee"].convert("RGB")
    coffee.save(tmp_path / "coffee.png")
    photos["chelsea"].convert("RGB").save(tmp_path / "cat.jpg", quality=90)
    off_centre_cut(coffee).save(tmp_path / "cut.jpg", quality=75)
    stored = analyze_batch(
        [tmp_path / "coffee.png", tmp_path / "cat.jpg"], embedder, max_pixels=10**8
    )
    store.upsert(stored.records)
    coffee_id = stored.records[0].id
    feed = RedisCodeFeed.from_url(redis_url, store.collection, store.instance)
    index = ArrivalIndex(store, feed, ArrivalCodes((), patch_radius=MATCH_RADIUS))
    image = load_for_signals(tmp_path / "cut.jpg", max_pixels=10**8, embedder=None).image
    query = SearchQuery(image=image, max_hamming=10)

    plain = search(store, embedder, query)
    assert coffee_id not in [hit.id for hit in plain.hits]
    found = search(store, embedder, query, patches=index)
    assert [hit.id for hit in found.hits][:1] == [coffee_id]
    [hit] = [hit for hit in found.hits if hit.id == coffee_id]
    assert hit.hamming is None and hit.patches >= 2 and hit.record.path.endswith("coffee.png")
    assert (hit.cosine is not None) == (model == "tiny-clip")
    assert found.mode == ("hybrid" if model == "tiny-clip" else "phash")
    assert "patches_ms" in found.stage_ms
    filtered = search(store, embedder, replace(query, where=(eq("format", "JPEG"),)), patches=index)
    assert coffee_id not in [hit.id for hit in filtered.hits]
    kept = search(store, embedder, replace(query, where=(eq("format", "PNG"),)), patches=index)
    assert [hit.id for hit in kept.hits] == [coffee_id]
    assert not found.truncated
    # A second copy of the original agrees too: over a candidate limit of 1, the result says so.
    coffee.save(tmp_path / "coffee.jpg", quality=85)
    copy = analyze_batch([tmp_path / "coffee.jpg"], embedder, max_pixels=10**8).records
    store.upsert(copy)
    index.stored(copy)  # as a worker's index announces what it wrote
    both = search(store, embedder, query, patches=index)
    assert len([hit for hit in both.hits if hit.hamming is None]) == 2 and not both.truncated
    one = search(store, embedder, replace(query, candidate_limit=1), patches=index)
    assert len([hit for hit in one.hits if hit.hamming is None]) == 1 and one.truncated

    [cut_record] = analyze_batch([tmp_path / "cut.jpg"], embedder, max_pixels=10**8).records
    store.upsert([cut_record])
    by_id = search(store, embedder, SearchQuery(id=cut_record.id, max_hamming=10), patches=index)
    assert coffee_id in [hit.id for hit in by_id.hits]
    assert cut_record.id not in [hit.id for hit in by_id.hits]
