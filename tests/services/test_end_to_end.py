"""Files to search results through the real path: decode, hash, tiny CLIP, Milvus Lite, search."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.app import app
from services.app import Lookalike, connect
from services.embed import ClipEmbedder
from services.filters import eq
from services.ingestion import MatchPolicy, ProcessLocks, ingest_paths
from services.pipeline import load_for_signals
from services.search import SearchQuery, search
from services.settings import Settings
from testkit.imagegen import make_photo_like

pytestmark = pytest.mark.integration

BASES = 12
COPIES = {
    "mirrored": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "half": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
}


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(BASES):
        image = make_photo_like(1000 + i, (320, 240))
        image.save(root / f"base{i:02d}.png")
        for label, transform in COPIES.items():
            transform(image).save(root / f"base{i:02d}_{label}.jpg", quality=92)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (root / "notes.jpg").write_text("a text file with an image name")
    return root


@pytest.fixture(scope="module")
def env(
    tiny_clip_dir: Path, milvus_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    return {
        "LOOKALIKE_MILVUS_URI": milvus_uri,
        "LOOKALIKE_CLIP_MODEL": str(tiny_clip_dir),
        "LOOKALIKE_COLLECTION": f"e2e_{uuid.uuid4().hex[:8]}",
        "LOOKALIKE_HOME": str(tmp_path_factory.mktemp("home")),
    }


@pytest.fixture(scope="module")
def indexed(env: dict[str, str], photo_dir: Path) -> Iterator[Lookalike]:
    settings = Settings.from_env(env)
    lookalike = connect(settings, env["LOOKALIKE_MILVUS_URI"])
    assert isinstance(lookalike.embedder, ClipEmbedder)
    files = sorted(photo_dir.iterdir())
    outcome = ingest_paths(
        lookalike.store,
        lookalike.embedder,
        [str(f) for f in files],
        locks=ProcessLocks(),
        policy=MatchPolicy(max_hamming=8, min_cosine=0.95),
        max_pixels=10**8,
        source="e2e",
        tags=["t"],
    )
    assert {Path(f.path).name for f in outcome.failures} == {"broken.jpg", "notes.jpg"}
    assert all(f.error for f in outcome.failures)
    assert len(outcome.records) == BASES * (1 + len(COPIES))
    yield lookalike
    lookalike.store.drop()
    lookalike.close()


def test_flips_and_rotations_found_by_one_search(indexed: Lookalike, photo_dir: Path) -> None:
    for i in range(BASES):
        query = load_for_signals(
            photo_dir / f"base{i:02d}.png", max_pixels=10**8, embedder=indexed.embedder
        )
        result = search(
            indexed.store, indexed.embedder, SearchQuery(image=query.image, max_hamming=8, top_k=50)
        )
        names = {Path(hit.path).name for hit in result.hits}
        expected = {f"base{i:02d}.png"} | {f"base{i:02d}_{label}.jpg" for label in COPIES}
        assert expected <= names, (i, names)
        assert result.mode == "hybrid"
        assert all(hit.cosine is not None and hit.hamming is not None for hit in result.hits)
        cosines = [hit.cosine for hit in result.hits]
        assert cosines == sorted(cosines, reverse=True)


def test_text_search_ranks_by_cosine_like_numpy(indexed: Lookalike) -> None:
    assert indexed.embedder is not None
    result = search(indexed.store, indexed.embedder, SearchQuery(text="a photo of a cat", top_k=10))
    stored = list(indexed.store.iterate(with_vectors=True))
    vector = indexed.embedder.embed_texts(["a photo of a cat"])[0]
    cosines = np.array([float(np.dot(r.clip, vector)) for r in stored])
    order = np.argsort(-cosines)[:10]
    assert result.mode == "text"
    assert [h.id for h in result.hits] == [stored[i].id for i in order]
    np.testing.assert_allclose([h.cosine for h in result.hits], cosines[order], atol=1e-5)


def test_filter_applies_to_hybrid_search(indexed: Lookalike, photo_dir: Path) -> None:
    query = load_for_signals(photo_dir / "base00.png", max_pixels=10**8, embedder=indexed.embedder)
    only_png = search(
        indexed.store,
        indexed.embedder,
        SearchQuery(image=query.image, max_hamming=8, where=(eq("format", "PNG"),)),
    )
    assert [Path(h.path).name for h in only_png.hits] == ["base00.png"]


def test_cli_add_and_search_json(
    env: dict[str, str], photo_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOOKALIKE_COLLECTION", f"cli_{uuid.uuid4().hex[:8]}")
    runner = CliRunner()
    added = runner.invoke(app, ["add", str(photo_dir), "--json", "--tag", "cli"])
    assert added.exit_code == 0, added.output
    summary = json.loads(added.stdout)
    assert summary["stored"] == BASES * (1 + len(COPIES)) == summary["rows"]
    assert sorted(Path(f["path"]).name for f in summary["failed"]) == ["broken.jpg", "notes.jpg"]

    found = runner.invoke(
        app,
        ["search", "--image", str(photo_dir / "base03_rot90.jpg"), "--json", "--where", "tag=cli"],
    )
    assert found.exit_code == 0, found.output
    hits = json.loads(found.stdout)
    assert {"id", "path", "cosine", "hamming"} <= set(hits[0])
    assert "base03.png" in {Path(h["path"]).name for h in hits}

    by_text = runner.invoke(app, ["search", "--text", "a red car", "--top-k", "3", "--json"])
    assert by_text.exit_code == 0, by_text.output
    assert len(json.loads(by_text.stdout)) == 3

    bad = runner.invoke(app, ["search", "--text", "x", "--where", "colour=red"])
    assert bad.exit_code == 1
    assert "unknown filter field 'colour'" in bad.output


def test_cli_reports_config_and_connection_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    runner = CliRunner()
    monkeypatch.setenv("LOOKALIKE_CLIP_MODLE", "typo")
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 2
    assert "unknown setting LOOKALIKE_CLIP_MODLE" in result.output
    monkeypatch.delenv("LOOKALIKE_CLIP_MODLE")
    monkeypatch.setenv("LOOKALIKE_MILVUS_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LOOKALIKE_CLIP_MODEL", "none")
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 1
    assert "unreachable" in result.output and "Traceback" not in result.output


def test_cli_search_with_patches_finds_the_original_of_an_off_centre_crop(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``lookalike search --patches`` (with the tiny saved CLIP, as users run it): a crop of a
    fifth of each side, nearly all off one corner, halved, finds its original by their patch
    codes; without the flag its Hamming stage does not."""
    from testkit.imagegen import off_centre_cut, sample_photos

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LOOKALIKE_COLLECTION", f"cli_{uuid.uuid4().hex[:8]}")
    photos = sample_photos(("coffee", "chelsea"))
    stored = tmp_path / "stored"
    stored.mkdir()
    coffee = photos["coffee"].convert("RGB")
    coffee.save(stored / "coffee.png")
    photos["chelsea"].convert("RGB").save(stored / "cat.jpg", quality=90)
    off_centre_cut(coffee).save(tmp_path / "cut.jpg", quality=75)
    runner = CliRunner()
    added = runner.invoke(app, ["add", str(stored), "--json"])
    assert added.exit_code == 0, added.output

    def found(*flags: str) -> list[dict[str, object]]:
        result = runner.invoke(
            app, ["search", "--image", str(tmp_path / "cut.jpg"), "--json", *flags]
        )
        assert result.exit_code == 0, result.output
        hits: list[dict[str, object]] = json.loads(result.stdout)
        return hits

    assert "coffee.png" not in {Path(str(h["path"])).name for h in found()}
    hits = {Path(str(h["path"])).name: h for h in found("--patches")}
    assert "coffee.png" in hits and "cat.jpg" not in hits
    assert hits["coffee.png"]["hamming"] is None
    assert int(str(hits["coffee.png"]["patches"])) >= 2

    # A query no store can answer is refused before every row's patch codes are read.
    import cli.search

    def refuse(*args: object) -> None:
        raise AssertionError("patch codes read for a query that is refused anyway")

    monkeypatch.setattr(cli.search, "LoadedPatches", refuse)
    bad = runner.invoke(
        app, ["search", "--image", str(tmp_path / "cut.jpg"), "--patches", "--top-k", "0"]
    )
    assert bad.exit_code == 1 and "top-k must be at least 1" in bad.output, bad.output
