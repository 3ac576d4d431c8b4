"""Clustering a real Milvus collection: planted clusters come back, and ids are written back."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from services.clusters import ClusterReport, cluster_collection, keep_cluster_ids
from services.errors import QueryError
from services.records import ImageRecord
from services.schema import UNASSIGNED_CLUSTER
from tests.records import random_records

pytestmark = pytest.mark.integration

DIM = 16
CENTRES = 5
PER_CENTRE = 60


def planted(
    seed: int = 0, outliers: int = 0, noise: float = 0.15
) -> tuple[list[ImageRecord], np.ndarray]:
    """CENTRES orthogonal directions with PER_CENTRE noisy unit vectors each, then ``outliers``
    vectors far from every centre; the records reuse random_records' metadata."""
    rng = np.random.default_rng(seed)
    centres = np.linalg.qr(rng.normal(size=(DIM, DIM)))[0][:CENTRES]
    truth = np.repeat(np.arange(CENTRES), PER_CENTRE)
    vectors = centres[truth] + rng.normal(scale=noise / np.sqrt(DIM), size=(len(truth), DIM))
    if outliers:
        # Between two centres, and off their plane: far from every centroid.
        far = (centres[0] + centres[1]) / 2 + 0.3 * rng.normal(size=(outliers, DIM))
        vectors = np.vstack([vectors, far])
        truth = np.concatenate([truth, np.full(outliers, -1)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    base = random_records(len(truth), dim=DIM, seed=seed)
    records = [
        ImageRecord(**{**r.__dict__, "clip": v.astype(np.float32)})
        for r, v in zip(base, vectors, strict=True)
    ]
    return records, truth


def assignment(report: ClusterReport) -> dict[str, int]:
    return {p.id: p.cluster for p in report.points}


def test_kmeans_recovers_planted_clusters_and_writes_them_back(make_store):
    store = make_store(clip_dim=DIM)
    records, truth = planted()
    store.upsert(records)
    stages = []

    report = cluster_collection(
        store, k=CENTRES, projection="pca", progress=lambda s, f: stages.append((s, f))
    )

    found = assignment(report)
    labels = [found[r.id] for r in records]
    assert adjusted_rand_score(truth, labels) == pytest.approx(1.0)
    stored = {r.id: r.cluster for r in store.iterate("")}
    assert stored == found
    assert sorted(c.size for c in report.clusters) == [PER_CENTRE] * CENTRES
    assert {s for s, _ in stages} == {"pull", "cluster", "map", "write"}
    assert report.stats["written"] == len(records)
    # Representatives: the members nearest the centroid, in that order.
    vectors = {r.id: r.clip for r in records}
    for info in report.clusters:
        members = np.stack([vectors[i] for i, c in found.items() if c == info.id])
        centroid = members.mean(axis=0) / np.linalg.norm(members.mean(axis=0))
        expected = sorted(
            (i for i, c in found.items() if c == info.id),
            key=lambda i: -float(vectors[i] @ centroid),
        )[:5]
        assert [i for i, _ in info.representatives] == expected
    # Same rows, same answer; nothing changed, so nothing is rewritten.
    again = cluster_collection(store, k=CENTRES, projection="pca")
    assert assignment(again) == found
    assert again.stats["written"] == 0


def test_auto_picks_the_planted_number_of_clusters(make_store):
    store = make_store(clip_dim=DIM)
    records, truth = planted(seed=1)
    store.upsert(records)

    report = cluster_collection(store, k=None, projection="pca", write=False)

    assert report.stats["auto_k"] == CENTRES
    found = assignment(report)
    assert adjusted_rand_score(truth, [found[r.id] for r in records]) == pytest.approx(1.0)
    assert {r.cluster for r in store.iterate("")} == {UNASSIGNED_CLUSTER}


def test_density_finds_the_planted_groups(make_store):
    store = make_store(clip_dim=DIM)
    records, truth = planted(seed=2, noise=0.1)
    store.upsert(records)

    report = cluster_collection(store, k=None, method="density", projection="pca")

    found = assignment(report)
    labels = np.array([found[r.id] for r in records])
    assert len(report.clusters) == CENTRES
    clustered = labels >= 0
    assert clustered.mean() >= 0.9
    assert adjusted_rand_score(truth[clustered], labels[clustered]) == pytest.approx(1.0)
    assert {r.id: r.cluster for r in store.iterate("")} == found


def test_planted_outliers_score_highest(make_store):
    store = make_store(clip_dim=DIM)
    records, truth = planted(seed=3, outliers=3)
    store.upsert(records)

    report = cluster_collection(store, k=CENTRES, projection="pca", write=False)

    ranked = sorted(report.points, key=lambda p: -p.outlier_score)
    planted_far = {r.id for r, t in zip(records, truth, strict=True) if t == -1}
    assert {p.id for p in ranked[:3]} == planted_far


def test_where_restricts_the_rows_clustered(make_store):
    store = make_store(clip_dim=DIM)
    records, _ = planted(seed=4)
    store.upsert(records)
    chosen = {r.id for r in records if r.source == "phone"}

    report = cluster_collection(store, k=3, where='source == "phone"', projection="pca")

    assert set(assignment(report)) == chosen
    for record in store.iterate(""):
        if record.id in chosen:
            assert record.cluster == assignment(report)[record.id]
        else:
            assert record.cluster == UNASSIGNED_CLUSTER


def test_a_run_over_other_rows_takes_ids_no_row_outside_it_holds(make_store):
    store = make_store(clip_dim=DIM)
    records, _ = planted(seed=10)
    store.upsert(records)
    phone = assignment(cluster_collection(store, k=3, where='source == "phone"', projection="pca"))

    rest = assignment(cluster_collection(store, k=2, where='source != "phone"', projection="pca"))

    assert set(rest.values()).isdisjoint(phone.values())
    assert set(phone.values()) == {0, 1, 2} and set(rest.values()) == {3, 4}
    stored = {r.id: r.cluster for r in store.iterate("")}
    assert stored == phone | rest


@pytest.mark.slow  # numba compiles UMAP's kernels on first use: about 30 s
def test_umap_map_places_every_point(make_store):
    pytest.importorskip("umap")
    store = make_store(clip_dim=DIM)
    records, _ = planted(seed=5)
    store.upsert(records)

    report = cluster_collection(store, k=CENTRES, projection="umap", write=False)

    coords = np.array([(p.x, p.y) for p in report.points])
    assert coords.shape == (len(records), 2)
    assert np.isfinite(coords).all()
    assert report.stats["projection"] == "umap"


def test_hash_only_collection_is_refused(make_store):
    store = make_store(clip_model=None, clip_dim=None)
    store.upsert(random_records(10, dim=None))

    with pytest.raises(QueryError, match="hash-only"):
        cluster_collection(store, k=2)


def test_bad_k_and_empty_selection_are_refused(make_store):
    store = make_store(clip_dim=DIM)
    records, _ = planted(seed=6)
    store.upsert(records)

    with pytest.raises(QueryError, match="k=1000"):
        cluster_collection(store, k=1000, projection="pca")
    with pytest.raises(QueryError, match="nothing to cluster"):
        cluster_collection(store, k=2, where='source == "nowhere"', projection="pca")


@pytest.mark.slow  # the CLI maps with UMAP when installed: numba compiles it first (~20 s)
def test_cli_clusters_json(make_store, milvus_uri, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cli.app import app

    store = make_store(clip_dim=DIM)
    records, truth = planted(seed=7)
    store.upsert(records)
    monkeypatch.setenv("LOOKALIKE_MILVUS_URI", milvus_uri)
    monkeypatch.setenv("LOOKALIKE_COLLECTION", store.collection)
    monkeypatch.setenv("LOOKALIKE_CLIP_MODEL", "none")
    monkeypatch.setenv("LOOKALIKE_HOME", str(tmp_path))
    runner = CliRunner()

    result = runner.invoke(app, ["clusters", "--k", str(CENTRES), "--json", "--points"])

    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert sorted(c["size"] for c in payload["clusters"]) == [PER_CENTRE] * CENTRES
    assert len(payload["points"]) == len(records)
    found = {p["id"]: p["cluster"] for p in payload["points"]}
    assert adjusted_rand_score(truth, [found[r.id] for r in records]) == pytest.approx(1.0)
    table = runner.invoke(app, ["clusters", "--k", "2", "--where", "cluster == 0"])
    assert table.exit_code == 0, table.output
    assert "representative images" in table.output
    refused = runner.invoke(app, ["clusters"])
    assert refused.exit_code == 1
    assert "--k K or --auto" in refused.output


def test_reclustering_after_growth_keeps_ids_and_rewrites_only_the_new_rows(make_store):
    store = make_store(clip_dim=DIM)
    records, truth = planted(seed=8)
    # Every 30th row arrives later: more members of the same planted clusters.
    later = np.zeros(len(records), dtype=bool)
    later[::30] = True
    store.upsert([r for r, held in zip(records, later, strict=True) if not held])
    first = assignment(cluster_collection(store, k=CENTRES, projection="pca"))
    store.upsert([r for r, held in zip(records, later, strict=True) if held])

    again = cluster_collection(store, k=CENTRES, projection="pca")

    found = assignment(again)
    assert {i: found[i] for i in first} == first
    assert again.stats["written"] == later.sum()
    # Each newcomer joined the cluster that holds the earlier members of its planted cluster.
    id_of_planted = {
        int(t): first[r.id] for r, t in zip(records, truth, strict=True) if r.id in first
    }
    for record, planted_cluster in zip(records, truth, strict=True):
        assert found[record.id] == id_of_planted[int(planted_cluster)]
    assert {r.id: r.cluster for r in store.iterate("")} == found
    # The rows were written back whole, each with its own vector, path and tags.
    rewritten = {r.id: r for r in store.get([r.id for r in records], with_vectors=True)}
    for record in records:
        assert (rewritten[record.id].path, rewritten[record.id].tags) == (record.path, record.tags)
        np.testing.assert_allclose(rewritten[record.id].clip, record.clip, atol=1e-6)


def test_keep_cluster_ids_follows_the_stored_ids():
    stored = np.array([3, 3, 3, 7, 7, 7, -1, -1, 3])
    labels = np.array([1, 1, 1, 0, 0, 0, 2, 2, -1])
    # New 1 is stored 3, new 0 is stored 7, new 2 (rows with no cluster) takes the smallest
    # free id; noise stays noise.
    assert keep_cluster_ids(labels, stored).tolist() == [7, 3, 0]
    # A split: the larger part keeps the id, the other takes a free one.
    split = keep_cluster_ids(np.array([0, 0, 0, 2, 1, 1]), np.array([0, 0, 0, 0, 1, 1]))
    assert split.tolist() == [0, 1, 2]
    # Nothing stored: the fit's own numbering.
    assert keep_cluster_ids(np.array([1, 0, 2]), np.full(3, -1)).tolist() == [0, 1, 2]


def test_keep_cluster_ids_keeps_as_many_rows_as_the_best_renumbering():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rows = int(rng.integers(1, 30))
        labels = rng.integers(-1, int(rng.integers(1, 5)), rows)
        stored = rng.integers(-1, int(rng.integers(1, 6)), rows)
        if labels.max() < 0:
            continue
        ids = keep_cluster_ids(labels, stored)
        kept = int(
            (np.where(labels >= 0, ids[np.maximum(labels, 0)], -1) == stored)[labels >= 0].sum()
        )
        # Brute force: every one-to-one numbering of the new clusters with ids below 10.
        best = max(
            int(
                sum(((labels == new) & (stored == numbering[new])).sum() for new in range(len(ids)))
            )
            for numbering in itertools.permutations(range(10), len(ids))
        )
        assert kept == best
        assert len(set(ids.tolist())) == len(ids)
