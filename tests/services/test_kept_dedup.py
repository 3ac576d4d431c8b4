"""The kept dedup result: a real Redis server, a real Milvus Lite collection, the real engine."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from cli.stack.redis_server import RedisServer
from services.decisions import RedisDecisions
from services.dedup import DedupOptions, DedupReport, find_duplicates
from services.keepers import parse_policy
from services.kept_dedup import (
    FORMER_KEEPER_REASON,
    PINNED_REASON,
    GroupTable,
    KeptResult,
    RedisKeptResults,
    kept_key,
)
from services.store import MilvusStore
from tests.conftest import StoreFactory, free_port
from tests.records import random_records
from tests.services.test_dedup import BASE, FAR, flip, record

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = f"redis://127.0.0.1:{free_port()}/0"
    server = RedisServer(url, tmp_path_factory.mktemp("redis"))
    server.start()
    yield url
    server.stop()


def _filled(make_store: StoreFactory, name: str | None = None) -> MilvusStore:
    """A collection with exact copies (one content, three paths), near groups of 2-4 (clustered
    random hashes) and a CLIP-linked pair."""
    store = make_store(clip_model=None, clip_dim=None, name=name)
    rows = random_records(300, dim=None, groups=60)
    rows.append(record("copy.jpg", FAR, paths=["/photos/copy.jpg", "/a/copy.jpg", "/b/copy.jpg"]))
    rows += [record("one.jpg", BASE, size=3000), record("two.jpg", flip(BASE, 3), size=2000)]
    store.upsert(rows)
    return store


def _run(store: MilvusStore, decisions: RedisDecisions | None = None) -> DedupReport:
    return find_duplicates(store, parse_policy(["bytes"]), DedupOptions(max_hamming=6), decisions)


def _kept(store: MilvusStore, report: DedupReport) -> KeptResult:
    return KeptResult.of(
        report,
        collection=store.collection,
        instance=store.instance,
        options=DedupOptions(max_hamming=6),
        policy=["bytes"],
        seconds=1.25,
        origin="cli",
    )


def test_a_kept_result_round_trips_through_redis(make_store: StoreFactory, redis_url: str) -> None:
    store = _filled(make_store)
    report = _run(store)
    assert report.stats["exact_groups"] == 1 and report.stats["near_groups"] > 10
    kept = RedisKeptResults.from_url(redis_url, store.collection)
    kept.save(_kept(store, report))

    loaded = kept.load(store.instance)
    assert loaded is not None
    assert [g.to_dict() for g in loaded.decided(set(), set()).groups()] == [
        g.to_dict() for g in report.groups
    ]
    assert loaded.options == DedupOptions(max_hamming=6) and loaded.policy == ("bytes",)
    assert loaded.stats == report.stats and loaded.seconds == 1.25 and loaded.origin == "cli"
    assert loaded.decided(set(), set()).counts() == {
        k: report.stats[k]
        for k in ("groups", "duplicates", "exact_groups", "near_groups", "burst_groups")
    }
    meta = kept.meta(store.instance)
    assert meta is not None and meta["run"] == loaded.run and meta["groups"] == len(report.groups)
    # One page of groups is made from the columns, in the report's order.
    assert [g.to_dict() for g in loaded.decided(set(), set()).groups(3, 6)] == [
        g.to_dict() for g in report.groups[3:6]
    ]


def test_cosines_and_missing_distances_survive_the_encoding() -> None:
    from services.dedup import DuplicateGroup, Member

    keeper = Member("k" * 64, "/p/ké.jpg", 0, 1.0, "kept: largest file")
    clip_only = Member("c" * 64, "/p/crop.jpg", None, 0.9612345, "CLIP cosine 0.961")
    both = Member("b" * 64, "/p/b.jpg", 3, 0.99, "pHash distance 3 (mirrored), CLIP cosine 0.990")
    groups = [DuplicateGroup("near", keeper, [clip_only, both])]
    decoded = GroupTable.decode(GroupTable.of(groups).encode())
    [group] = [decoded.group(0)]
    assert group.keeper == keeper and group.duplicates[1] == both
    assert group.duplicates[0].hamming is None
    assert group.duplicates[0].cosine == 0.9612345
    empty = GroupTable.decode(GroupTable.of([]).encode())
    assert len(empty) == 0 and empty.members == 0


def test_a_result_never_outlives_its_collection(make_store: StoreFactory, redis_url: str) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    store = _filled(make_store, name)
    kept = RedisKeptResults.from_url(redis_url, name)
    kept.save(_kept(store, _run(store)))
    assert kept.load(store.instance) is not None
    assert kept.load("another-instance") is None and kept.meta("another-instance") is None

    store.drop()  # the collection is made again under the same name: another instance
    again = _filled(make_store, name)
    assert again.instance != store.instance
    assert kept.meta(again.instance) is None and kept.load(again.instance) is None
    kept.save(_kept(again, _run(again)))  # its own result replaces the old one
    assert kept.load(again.instance) is not None and kept.load(store.instance) is None


def test_a_result_of_an_unknown_format_is_ignored(redis_url: str) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(redis_url)
    client.hset(kept_key(name), mapping={"meta": '{"format": 99, "instance": "x"}', "groups": b""})
    kept = RedisKeptResults(client, name)
    assert kept.meta("x") is None and kept.load("x") is None


def test_decisions_apply_to_the_kept_result_as_a_recompute_would(
    make_store: StoreFactory, redis_url: str
) -> None:
    store = _filled(make_store)
    decisions = RedisDecisions.from_url(redis_url, store.collection)
    report = _run(store, decisions)
    kept = _kept(store, report)
    larger = [g for g in report.groups if g.kind == "near" and len(g.duplicates) >= 2]
    pair = next(g for g in report.groups if g.kind == "near" and len(g.duplicates) == 1)
    split, dismissed = larger[0], larger[1]
    version = decisions.version()

    decisions.record("not_duplicates", dismissed.keeper.id, [m.id for m in dismissed.duplicates])
    decisions.record("resolved", pair.keeper.id, [pair.duplicates[0].id])
    decisions.record("resolved", split.keeper.id, [split.duplicates[0].id])
    assert decisions.version() == version + 3
    view = kept.decided(decisions.suppressed_pairs(), decisions.pinned_keepers())

    shown = {g.keeper.path: g for g in view.groups()}
    assert dismissed.keeper.path not in shown and pair.keeper.path not in shown
    assert [m.path for m in shown[split.keeper.path].duplicates] == [
        m.path for m in split.duplicates[1:]
    ]
    assert len(view) == len(report.groups) - 2
    counts = view.counts()
    assert counts["duplicates"] == report.stats["duplicates"] - len(dismissed.duplicates) - 2
    # A recompute with the same decisions no longer has the decided pairs either.
    again = _run(store, decisions)
    pairs = {(g.keeper.path, m.path) for g in again.groups for m in g.duplicates}
    for gone in (dismissed, pair):
        assert not {(gone.keeper.path, m.path) for m in gone.duplicates} & pairs
    assert (split.keeper.path, split.duplicates[0].path) not in pairs


def test_a_pinned_keeper_shows_at_once(make_store: StoreFactory, redis_url: str) -> None:
    store = _filled(make_store)
    decisions = RedisDecisions.from_url(redis_url, store.collection)
    report = _run(store, decisions)
    group = next(g for g in report.groups if g.kind == "near")
    chosen = group.duplicates[0]
    decisions.pin_keeper(chosen.path, [m.path for m in group.members])

    view = _kept(store, report).decided(decisions.suppressed_pairs(), decisions.pinned_keepers())
    shown = next(g for g in view.groups() if chosen.path in {m.path for m in g.members})
    assert shown.keeper.path == chosen.path and shown.keeper.reason == PINNED_REASON
    former = shown.duplicates[0]
    assert former.path == group.keeper.path and former.reason == FORMER_KEEPER_REASON
    assert sorted(m.path for m in shown.members) == sorted(m.path for m in group.members)
    # The engine, run again, keeps the same file.
    again = _run(store, decisions)
    assert any(g.keeper.path == chosen.path for g in again.groups)


def test_progress_is_reported_stage_by_stage(make_store: StoreFactory) -> None:
    store = _filled(make_store)
    heard: list[tuple[float, str]] = []
    find_duplicates(
        store,
        parse_policy([]),
        DedupOptions(max_hamming=6),
        progress=lambda done, stage: heard.append((done, stage)),
    )
    fractions = [done for done, _ in heard]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    stages = " / ".join(stage for _, stage in heard)
    for words in ("several paths", "reading the hashes: 303 of 303 rows", "pairing", "grouping"):
        assert words in stages


def test_kept_results_are_per_collection(make_store: StoreFactory, redis_url: str) -> None:
    store = _filled(make_store)
    RedisKeptResults.from_url(redis_url, store.collection).save(_kept(store, _run(store)))
    other = RedisKeptResults.from_url(redis_url, f"{store.collection}_other")
    assert other.load(store.instance) is None
