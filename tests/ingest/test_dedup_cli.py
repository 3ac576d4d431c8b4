"""`lookalike dedup` end to end: real images ingested by a real worker, decisions in Redis."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from services.decisions import RedisDecisions
from services.kept_dedup import KeptResult, RedisKeptResults
from tests.ingest.conftest import IngestEnv
from tests.ingest.images import copy_exact, photo_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _groups(env: IngestEnv, *args: str) -> list[dict[str, object]]:
    result = env.run_cli("dedup", "--json", "--keep", "path:/photo_", "--keep", "pixels", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    groups: list[dict[str, object]] = json.loads(result.stdout)["groups"]
    return groups


def _kept(env: IngestEnv) -> KeptResult:
    from services.store import MilvusStore, stored_contract

    contract = stored_contract(env.milvus_uri, env.collection)
    assert contract is not None
    store = MilvusStore.connect(env.milvus_uri, env.collection, contract)
    try:
        kept = RedisKeptResults.from_url(env.env["LOOKALIKE_REDIS_URL"], env.collection).load(
            store.instance
        )
    finally:
        store.close()
    assert kept is not None
    return kept


def _names(group: dict[str, object]) -> tuple[str, list[str]]:
    duplicates = group["duplicates"]
    assert isinstance(duplicates, list)
    return Path(str(group["keep"])).name, sorted(Path(p).name for p in duplicates)


def test_dedup_finds_exact_flipped_and_rotated_copies(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    library = tmp_path / "library"
    originals = photo_folder(library, 12, size=(320, 240))
    copy_exact(originals[:2], library / "backup")
    edits = library / "edits"
    edits.mkdir()
    with Image.open(originals[3]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edits / "mirrored.jpg", quality=90)
    with Image.open(originals[4]) as image:
        image.transpose(Image.Transpose.ROTATE_90).save(edits / "rotated.jpg", quality=90)
        image.resize((160, 120)).save(edits / "small.jpg", quality=80)
    ingest_env.start_worker(concurrency=1)
    ingest_env.ingest_json(str(library), "--wait")

    groups = _groups(ingest_env)
    # The run is kept in Redis for the Duplicates page: the same groups, with what it ran with.
    kept = _kept(ingest_env)
    assert [g.to_dict() for g in kept.decided(set(), set()).groups()] == groups
    assert kept.origin == "cli" and kept.policy == ("path:/photo_", "pixels")
    assert kept.options.max_hamming == 8 and kept.options.min_cosine is None
    found = sorted(_names(g) for g in groups)
    assert found == sorted(
        [
            ("photo_0000.jpg", ["copy_of_photo_0000.jpg"]),
            ("photo_0001.jpg", ["copy_of_photo_0001.jpg"]),
            ("photo_0003.jpg", ["mirrored.jpg"]),
            ("photo_0004.jpg", ["rotated.jpg", "small.jpg"]),
        ]
    )
    csv_path = tmp_path / "groups.csv"
    assert ingest_env.run_cli("dedup", "--csv", str(csv_path)).returncode == 0
    assert len(csv_path.read_text().splitlines()) == 1 + 9  # header + one row per member

    truth = tmp_path / "truth.csv"
    rows = [f"{p},{p.stem}" for p in originals]
    rows += [f"{library / 'backup' / f'copy_of_photo_000{i}.jpg'},photo_000{i}" for i in (0, 1)]
    rows += [f"{edits / 'mirrored.jpg'},photo_0003", f"{edits / 'rotated.jpg'},photo_0004"]
    rows += [f"{edits / 'small.jpg'},photo_0004"]
    truth.write_text("path,group\n" + "\n".join(rows) + "\n")
    curve = tmp_path / "pr.png"
    evaluated = ingest_env.run_cli("eval", str(truth), "--json", "--png", str(curve))
    assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert scores["labelled"] == scores["found"] == 17
    at_8 = next(r for r in scores["results"]["pHash"] if r["threshold"] == 8)
    assert (at_8["tp"], at_8["fp"], at_8["fn"]) == (6, 0, 0)  # 2 exact, 1 mirrored, 3 of 0004
    assert curve.read_bytes().startswith(b"\x89PNG")

    refused = ingest_env.run_cli("dedup", "--delete")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert all(p.exists() for p in originals)

    mirrored = next(g for g in groups if _names(g)[0] == "photo_0003.jpg")
    members = mirrored["members"]
    assert isinstance(members, list)
    ids = [str(m["id"]) for m in members]
    decided = ingest_env.run_cli("decide", "not-duplicates", *ids)
    assert decided.returncode == 0, decided.stderr
    assert "photo_0003.jpg" not in {_names(g)[0] for g in _groups(ingest_env)}

    quarantine = tmp_path / "quarantine"
    moved = ingest_env.run_cli("dedup", "--keep", "path:/photo_", "--move-to", str(quarantine))
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert sorted(p.relative_to(quarantine).as_posix() for p in quarantine.rglob("*.jpg")) == [
        "backup/copy_of_photo_0000.jpg",
        "backup/copy_of_photo_0001.jpg",
        "edits/rotated.jpg",
        "edits/small.jpg",
    ]
    assert (edits / "mirrored.jpg").exists()  # marked not duplicates: left alone
    assert _groups(ingest_env) == []  # resolved groups do not come back


def test_undo_puts_a_quarantine_move_back(ingest_env: IngestEnv, tmp_path: Path) -> None:
    library = tmp_path / "library"
    originals = photo_folder(library, 4, size=(320, 240))
    [copy] = copy_exact(originals[:1], library / "backup")
    small = library / "edits" / "small.jpg"
    small.parent.mkdir()
    with Image.open(originals[1]) as image:
        image.resize((160, 120)).save(small, quality=80)
    ingest_env.start_worker(concurrency=1)
    ingest_env.ingest_json(str(library), "--wait")
    contents = {p: p.read_bytes() for p in library.rglob("*.jpg")}
    found = sorted(_names(g) for g in _groups(ingest_env))
    assert found == [
        ("photo_0000.jpg", ["copy_of_photo_0000.jpg"]),
        ("photo_0001.jpg", ["small.jpg"]),
    ]

    quarantine = tmp_path / "quarantine"
    moved = ingest_env.run_cli(
        "dedup", "--json", "--keep", "path:/photo_", "--move-to", str(quarantine)
    )
    assert moved.returncode == 0, moved.stdout + moved.stderr
    manifest = Path(json.loads(moved.stdout)["manifest"])
    assert manifest.parent == quarantine and manifest.name.startswith(".lookalike-manifest-")
    assert not copy.exists() and not small.exists()
    assert _groups(ingest_env) == []
    decisions = RedisDecisions.from_url(
        ingest_env.env["LOOKALIKE_REDIS_URL"], ingest_env.collection
    )
    entries = [json.loads(line) for line in manifest.read_text().splitlines()[1:]]
    assert sorted(e["original"] for e in entries) == sorted([str(copy), str(small)])
    histories = {k: decisions.history(k) for k in {e["keeper_id"] for e in entries}}
    assert sorted(h["path"] for hs in histories.values() for h in hs) == sorted(
        [str(copy), str(small)]
    )

    missing = ingest_env.run_cli("undo", str(tmp_path / "no-such.jsonl"))
    assert missing.returncode == 1 and "no manifest at" in missing.stderr
    dry = ingest_env.run_cli("undo", "--dry-run", str(manifest))
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "would restore 2 of 2" in dry.stdout and not copy.exists()

    copy.write_bytes(b"made since the move")  # a new file at the original path: kept
    partial = ingest_env.run_cli("undo", str(manifest))
    assert partial.returncode == 1
    assert "not overwritten" in partial.stdout and "restored 1 of 2" in partial.stdout
    assert copy.read_bytes() == b"made since the move" and small.read_bytes() == contents[small]

    copy.unlink()
    again = ingest_env.run_cli("undo", str(manifest))
    assert again.returncode == 0, again.stdout + again.stderr
    assert {p: p.read_bytes() for p in library.rglob("*.jpg")} == contents
    assert sorted(_names(g) for g in _groups(ingest_env)) == found  # the groups come back


def test_clip_dedup_after_an_ingest_takes_every_vector_from_what_the_workers_kept(
    ingest_env: IngestEnv, tmp_path: Path, tiny_clip_dir: Path
) -> None:
    """As users run it: a CLIP model, two worker processes, then `lookalike dedup` with CLIP
    pairs. The workers kept each new content's vector under the home, so the dedup reads no
    vector from Milvus; without the cache it finds the same groups, every vector from Milvus."""
    ingest_env.env["LOOKALIKE_CLIP_MODEL"] = str(tiny_clip_dir)
    library = tmp_path / "library"
    originals = photo_folder(library, 20, size=(160, 120))
    copy_exact(originals[:2], library / "backup")
    with Image.open(originals[5]) as image:
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(library / "mirrored.jpg")
    ingest_env.start_worker(concurrency=2)
    assert ingest_env.ingest_json(str(library), "--wait")["ingested"] == 23
    [folder] = (ingest_env.home / "vectors").glob(f"{ingest_env.collection}-*")
    assert sum(p.stat().st_size for p in folder.glob("*.ids")) // 32 == 21  # contents

    def dedup(*env: tuple[str, str]) -> dict[str, object]:
        saved = dict(ingest_env.env)
        ingest_env.env.update(env)
        try:
            result = ingest_env.run_cli("dedup", "--json", "--min-cosine", "0.9")
        finally:
            ingest_env.env.clear()
            ingest_env.env.update(saved)
        assert result.returncode == 0, result.stdout + result.stderr
        payload: dict[str, object] = json.loads(result.stdout)
        return payload

    cached = dedup()
    stats = cached["stats"]
    assert isinstance(stats, dict)
    assert stats["rows"] == stats["vectors_from_cache"] == 21, stats
    plain = dedup(("LOOKALIKE_VECTOR_CACHE", "false"))
    assert isinstance(plain["stats"], dict) and plain["stats"]["vectors_from_cache"] == 0
    assert plain["groups"] == cached["groups"] and cached["groups"]
