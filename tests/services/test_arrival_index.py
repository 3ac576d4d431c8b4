"""Arrival against a worker's in-process index: real Milvus Lite, real Redis (the feed)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import redis
from PIL import Image

from services.arrival import find_matches
from services.arrival_index import ArrivalCodes, ArrivalIndex, arrival_codes
from services.code_feed import FeedDeletions, RedisCodeFeed
from services.code_index import phash_kind
from services.errors import LedgerUnavailableError
from services.ingestion import IngestOutcome, MatchPolicy, ProcessLocks, ingest_paths
from services.pipeline import analyze_batch
from services.schema import NO_DISTANCE
from services.store import MilvusStore
from testkit.imagegen import make_photo_like
from tests.conftest import StoreFactory, free_port

POLICY = MatchPolicy(max_hamming=8, min_cosine=0.95)


def photos(folder: Path, seeds: range) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"p{seed}.jpg"
        make_photo_like(seed, (96, 72)).save(path, quality=90)
        paths.append(str(path))
    return paths


def mirrors(paths: list[str], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = folder / Path(path).name
        Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target, quality=90)
        out.append(str(target))
    return out


def worker_index(store: MilvusStore, redis_url: str) -> ArrivalIndex:
    feed = RedisCodeFeed.from_url(redis_url, store.collection, store.instance)
    return ArrivalIndex(store, feed, ArrivalCodes((phash_kind(POLICY.max_hamming),)))


def ingest(store: MilvusStore, paths: list[str], index: ArrivalIndex | None):  # type: ignore[no-untyped-def]
    return ingest_paths(
        store, None, paths, locks=ProcessLocks(), policy=POLICY, max_pixels=10**8, index=index
    )


def assert_matched(
    store: MilvusStore, outcome: IngestOutcome, originals: list[str], copies: list[str]
) -> None:
    """Every copy arrived as a near-duplicate of its original, and its row says so."""
    assert sorted(outcome.near) == sorted(copies)
    rows = {r.path: r for r in store.iterate()}
    for original, copy in zip(originals, copies, strict=True):
        assert rows[copy].dup_of == rows[original].id


def dup_of(store: MilvusStore) -> dict[str, str]:
    return {r.path: r.dup_of for r in store.iterate()}


def test_a_row_stored_by_one_index_is_matched_through_the_other(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    first, second = worker_index(store, redis_url), worker_index(store, redis_url)
    ingest(store, photos(tmp_path / "warm", range(100, 102)), first)
    first.refresh()  # both built before the originals exist
    second.refresh()
    assert len(first) == len(second) == 2
    originals = photos(tmp_path / "a", range(4))
    ingest(store, originals, first)

    copies = mirrors(originals, tmp_path / "m")
    outcome = ingest(store, copies, second)

    assert_matched(store, outcome, originals, copies)
    assert len(second) == 6  # warm-up and originals (the feed); its copies at the next refresh
    assert len(first) == 2  # not refreshed since (its originals come back through the feed)
    first.refresh()
    second.refresh()
    assert len(first) == len(second) == 10


def test_matches_equal_those_of_a_milvus_search(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    """The reference: the same arrivals against the same rows, by a Milvus range search."""
    store = make_store(clip_model=None, clip_dim=None)
    ingest(store, photos(tmp_path / "a", range(30)), None)
    arrivals = analyze_batch(
        mirrors(photos(tmp_path / "b", range(20, 40)), tmp_path / "m"), None, max_pixels=10**8
    )
    index = worker_index(store, redis_url)

    by_index = find_matches(
        store, arrivals.records, arrivals.variants, max_hamming=8, min_cosine=0.95, index=index
    )
    by_milvus = find_matches(
        store, arrivals.records, arrivals.variants, max_hamming=8, min_cosine=0.95
    )
    assert sum(m is not None for m in by_milvus) >= 10
    assert by_index == by_milvus


def deleter(store: MilvusStore, notices: FeedDeletions) -> MilvusStore:
    """Another process's store on the same collection, deleting as every lookalike writer does
    (dedup --move-to, undo, sync, the UI's quarantine): with the feed told."""
    return MilvusStore.connect(
        store.uri, store.collection, store.contract, create=False, notices=notices
    )


def test_a_row_deleted_by_another_process_is_never_matched(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    writer, other = worker_index(store, redis_url), worker_index(store, redis_url)
    [original] = photos(tmp_path / "a", range(1))
    requal = tmp_path / "a" / "requal.jpg"  # another content, a near pHash
    Image.open(original).save(requal, quality=60)
    ingest(store, [original], writer)
    ingest(store, [str(requal)], writer)
    other.refresh()
    rows = {r.path: r for r in store.iterate()}
    assert rows[str(requal)].dup_of == rows[original].id
    dedup = deleter(store, FeedDeletions.from_url(redis_url))
    dedup.delete([rows[original].id])

    [copy] = mirrors([original], tmp_path / "m")
    ingest(store, [copy], other)  # no read of Milvus: the index heard of the deletion

    assert dup_of(store)[copy] == rows[str(requal)].id  # the next candidate, still stored
    [lonely] = mirrors(photos(tmp_path / "c", range(50, 51)), tmp_path / "n")
    dedup.delete([r.id for r in store.iterate()])
    dedup.close()
    ingest(store, [lonely], writer)
    assert dup_of(store) == {lonely: ""}


class LoadDuringDelete(FeedDeletions):
    """Announces like FeedDeletions, and loads ``index`` from Milvus between the announcement
    and the delete: the load reads the row, and must still forget it."""

    def __init__(self, redis_url: str, index: ArrivalIndex) -> None:
        super().__init__(redis.Redis.from_url(redis_url))
        self.index = index

    def deleting(self, collection: str, instance: str, ids: Sequence[str]) -> None:
        super().deleting(collection, instance, ids)
        self.index.rebuild()
        assert len(self.index) == 1  # the row is still in Milvus, so in the index


def test_an_index_loaded_while_a_row_is_deleted_forgets_it(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    index = worker_index(store, redis_url)
    [original] = photos(tmp_path / "a", range(1))
    ingest(store, [original], None)
    racing = deleter(store, LoadDuringDelete(redis_url, index))
    racing.delete([r.id for r in store.iterate()])
    racing.close()

    [copy] = mirrors([original], tmp_path / "m")
    ingest(store, [copy], index)
    assert dup_of(store) == {copy: ""}


def test_a_deletion_that_cannot_be_announced_deletes_nothing(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    ingest(store, photos(tmp_path / "a", range(2)), None)
    gone_redis = deleter(store, FeedDeletions.from_url(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(LedgerUnavailableError, match="tell the workers of deleted rows"):
        gone_redis.delete([r.id for r in store.iterate()])
    gone_redis.close()
    assert store.count() == 2


def test_clip_matches_equal_those_of_a_milvus_search(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    """With CLIP vectors: a pHash match's cosine comes from the cosine search when the match is
    among its hits, else from a read; either way as a Milvus range search finds it."""
    store = make_store(clip_model="test-model", clip_dim=8)
    rng = np.random.default_rng(7)
    stored = analyze_batch(photos(tmp_path / "a", range(12)), None, max_pixels=10**8).records
    vectors = {r.id: unit(rng.normal(size=8)) for r in stored}
    store.upsert([replace(r, clip=vectors[r.id]) for r in stored])
    arrivals = analyze_batch(mirrors(photos(tmp_path / "b", range(12)), tmp_path / "m"), None,
                             max_pixels=10**8)  # fmt: skip
    with_vectors = []
    for number, record in enumerate(arrivals.records):
        near = next(s for s in stored if s.path.endswith(Path(record.path).name))
        # Even arrivals: a vector close to their original's (a top cosine hit); odd: random.
        noise = rng.normal(size=8)
        vector = vectors[near.id] + 0.05 * noise if number % 2 == 0 else noise
        with_vectors.append(replace(record, clip=unit(vector)))

    by_index = find_matches(store, with_vectors, arrivals.variants, max_hamming=8,
                            min_cosine=0.95, index=worker_index(store, redis_url))  # fmt: skip
    by_milvus = find_matches(store, with_vectors, arrivals.variants, max_hamming=8,
                             min_cosine=0.95)  # fmt: skip

    assert sum(m is not None and m.hamming != NO_DISTANCE for m in by_milvus) >= 8
    assert [(m.dup_of, m.hamming) if m else None for m in by_index] == [
        (m.dup_of, m.hamming) if m else None for m in by_milvus
    ]
    for a, b in zip(by_index, by_milvus, strict=True):
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert a.cosine == pytest.approx(b.cosine, abs=1e-5)


def unit(vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def test_an_index_behind_a_trimmed_feed_rebuilds_from_milvus(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    idle, busy = worker_index(store, redis_url), worker_index(store, redis_url)
    idle.refresh()
    originals = photos(tmp_path / "a", range(3))
    ingest(store, originals, busy)
    client = redis.Redis.from_url(redis_url)
    client.xtrim(RedisCodeFeed(client, store.collection, store.instance).key, maxlen=0)

    copies = mirrors(originals, tmp_path / "m")
    ingest(store, copies, idle)

    rows = {r.path: r for r in store.iterate()}
    assert [rows[c].dup_of for c in copies] == [rows[o].id for o in originals]


class LosesOneAnnouncement(RedisCodeFeed):
    """The feed as Redis serves it, except that one announcement is lost: Redis went away
    between the upsert and the XADD."""

    def __init__(self, redis_url: str, store: MilvusStore) -> None:
        super().__init__(redis.Redis.from_url(redis_url), store.collection, store.instance)
        self.lost = False

    def publish(
        self,
        codes: dict[str, tuple[Sequence[str], npt.NDArray[np.uint64]]],
        patches: tuple[Sequence[str], Sequence[str]] = ((), ()),
    ) -> None:
        if not self.lost:
            self.lost = True
            raise LedgerUnavailableError("Redis went away (test)")
        super().publish(codes, patches)


def test_rows_whose_announcement_was_lost_are_announced_by_the_retry(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    losing = ArrivalIndex(
        store, LosesOneAnnouncement(redis_url, store), ArrivalCodes((phash_kind(8),))
    )
    other = worker_index(store, redis_url)
    other.refresh()  # loaded before the originals exist: it learns of them from the feed only
    originals = photos(tmp_path / "a", range(3))
    with pytest.raises(LedgerUnavailableError):
        ingest(store, originals, losing)
    assert store.count() == 3  # written, never announced
    other.refresh()
    assert len(other) == 0

    retry = ingest(store, originals, losing)  # the batch delivered again: nothing to write
    assert retry.written == 0
    copies = mirrors(originals, tmp_path / "m")
    outcome = ingest(store, copies, other)

    assert_matched(store, outcome, originals, copies)


def test_stored_rows_another_writer_announced_are_not_announced_again(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    first, second = worker_index(store, redis_url), worker_index(store, redis_url)
    first.refresh()
    second.refresh()  # both loaded before the originals exist
    originals = photos(tmp_path / "a", range(3))
    ingest(store, originals, first)
    feed = redis.Redis.from_url(redis_url)
    key = RedisCodeFeed.from_url(redis_url, store.collection, store.instance).key
    announced = feed.xlen(key)

    again = ingest(store, originals, second)  # the same files through the other worker

    assert again.written == 0
    assert feed.xlen(key) == announced


# --- off-centre crops: the patch codes --------------------------------------------------------


def coffee_and_its_cut(folder: Path) -> tuple[list[str], str]:
    """Two photos, and a crop of the first cut a fifth of each side, nearly all off one corner,
    halved and recompressed: no whole-frame or centred-window code meets it (every window is
    centred), its patches agree with the original's (services.patches)."""
    from testkit.imagegen import off_centre_cut, sample_photos

    folder.mkdir(parents=True, exist_ok=True)
    photos = sample_photos(("coffee", "chelsea"))
    coffee = photos["coffee"].convert("RGB")
    coffee.save(folder / "coffee.png")
    photos["chelsea"].convert("RGB").save(folder / "cat.png")
    off_centre_cut(coffee).save(folder / "cut.jpg", quality=75)
    return [str(folder / "coffee.png"), str(folder / "cat.png")], str(folder / "cut.jpg")


def patch_index(store: MilvusStore, redis_url: str, *, patches: bool) -> ArrivalIndex:
    feed = RedisCodeFeed.from_url(redis_url, store.collection, store.instance)
    return ArrivalIndex(store, feed, arrival_codes(POLICY.max_hamming, patches=patches))


@pytest.mark.parametrize("model", ["hash-only", "tiny-clip"])
def test_an_off_centre_crop_arriving_after_its_original_is_matched_by_its_patches(
    make_store: StoreFactory, redis_url: str, tmp_path: Path, tiny_clip_dir: Path, model: str
) -> None:
    """The original stored through one worker's index, the crop arriving at another's, which
    learns of the original's patch codes through the feed only; hash-only, and with a (tiny,
    saved) CLIP model as users run it (no cosine reaches the policy's threshold)."""
    from services.embed import ClipEmbedder

    embedder = None
    store = make_store(clip_model=None, clip_dim=None)
    if model == "tiny-clip":
        embedder = ClipEmbedder.load(str(tiny_clip_dir), device="cpu", precision="fp32")
        store = make_store(clip_model="tiny-clip", clip_dim=embedder.dim)
    policy = MatchPolicy(max_hamming=8, min_cosine=1.01)
    first, second = (patch_index(store, redis_url, patches=True) for _ in range(2))
    second.refresh()  # loaded before the originals exist
    originals, cut = coffee_and_its_cut(tmp_path)

    def arrive(paths: list[str], index: ArrivalIndex) -> IngestOutcome:
        return ingest_paths(
            store, embedder, paths, locks=ProcessLocks(), policy=policy, max_pixels=10**8,
            index=index,
        )  # fmt: skip

    arrive(originals, first)
    outcome = arrive([cut], second)

    assert outcome.near == [cut]
    rows = {r.path: r for r in store.iterate()}
    assert rows[cut].dup_of == rows[originals[0]].id
    assert rows[cut].dup_hamming == NO_DISTANCE  # no pHash or frame code matched it
    assert rows[originals[1]].dup_of == ""


def test_without_patch_codes_in_the_index_the_off_centre_crop_arrives_unmatched(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    """The control: what the patch codes add (``LOOKALIKE_ARRIVAL_PATCHES=false``)."""
    store = make_store(clip_model=None, clip_dim=None)
    policy = replace(POLICY, patches=False)
    index = patch_index(store, redis_url, patches=False)
    originals, cut = coffee_and_its_cut(tmp_path)
    for paths in (originals, [cut]):
        outcome = ingest_paths(
            store, None, paths, locks=ProcessLocks(), policy=policy, max_pixels=10**8,
            index=index,
        )  # fmt: skip
    assert outcome.near == []


def test_an_index_loaded_from_milvus_holds_the_patch_codes(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    """A worker started after the original was stored (by ``lookalike add``: no index) reads
    its patch codes in its bulk load, not from the feed."""
    store = make_store(clip_model=None, clip_dim=None)
    originals, cut = coffee_and_its_cut(tmp_path)
    ingest(store, originals, None)
    index = patch_index(store, redis_url, patches=True)
    arrivals = analyze_batch([cut], None, max_pixels=10**8)

    [match] = find_matches(
        store, arrivals.records, arrivals.variants, max_hamming=8, min_cosine=0.95, index=index
    )

    assert match is not None and match.patches >= 2 and match.hamming == NO_DISTANCE
    assert match.dup_of == analyze_batch(originals[:1], None, max_pixels=10**8).records[0].id
    index.forget([match.dup_of])  # deleted since: not matched again
    assert find_matches(
        store, arrivals.records, arrivals.variants, max_hamming=8, min_cosine=0.95, index=index
    ) == [None]


@pytest.mark.parametrize("patches", [True, False])
def test_an_off_centre_crop_in_the_same_batch_as_its_original_is_matched(
    make_store: StoreFactory, tmp_path: Path, patches: bool
) -> None:
    """Within a batch the records are compared in process (here with no index: the Milvus
    search, which cannot search patch codes, finds nothing stored)."""
    store = make_store(clip_model=None, clip_dim=None)
    originals, cut = coffee_and_its_cut(tmp_path)
    outcome = ingest_paths(
        store, None, [*originals, cut], locks=ProcessLocks(),
        policy=replace(POLICY, patches=patches), max_pixels=10**8,
    )  # fmt: skip
    assert outcome.near == ([cut] if patches else [])


def test_a_search_index_learns_patch_codes_from_workers_that_do_not_match_them(
    make_store: StoreFactory, redis_url: str, tmp_path: Path
) -> None:
    """The UI's index of patch codes alone, loaded before the originals were stored by a worker
    with ``LOOKALIKE_ARRIVAL_PATCHES=false``: the feed still carries their patch codes."""
    from services.patches import MATCH_RADIUS

    store = make_store(clip_model=None, clip_dim=None)
    feed = RedisCodeFeed.from_url(redis_url, store.collection, store.instance)
    search_index = ArrivalIndex(store, feed, ArrivalCodes((), patch_radius=MATCH_RADIUS))
    search_index.refresh()
    assert len(search_index) == 0
    worker = patch_index(store, redis_url, patches=False)
    originals, cut = coffee_and_its_cut(tmp_path)
    ingest_paths(
        store, None, originals, locks=ProcessLocks(), policy=replace(POLICY, patches=False),
        max_pixels=10**8, index=worker,
    )  # fmt: skip
    [query] = analyze_batch([cut], None, max_pixels=10**8).records
    assert query.patches is not None

    [hit] = search_index.agreeing(query.patches)

    assert hit.id == analyze_batch(originals[:1], None, max_pixels=10**8).records[0].id
    assert hit.shared >= 2
