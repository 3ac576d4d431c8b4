"""Every benchmark script runs on tiny inputs, so none of them rots. Figures come from full runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import _report

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _docs_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A smoke run must not rewrite docs/benchmarks.md, whatever its flags say."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a smoke run tried to write docs/benchmarks.md")

    monkeypatch.setattr(_report, "write_section", refuse)


def test_phash_speed_smoke() -> None:
    from bench import phash_speed

    assert phash_speed.main(["--generate", "5", "--repeat", "1", "--no-write"]) == 0


def test_clip_speed_smoke() -> None:
    from bench import clip_speed

    assert clip_speed.main(["--n", "4", "--batch-size", "2", "--repeat", "1", "--no-write"]) == 0


def test_ingest_speed_smoke() -> None:
    from bench import ingest_speed

    assert ingest_speed.main(["--limit", "20", "--no-clip", "--no-write"]) == 0


def test_dedup_scale_smoke() -> None:
    from bench import dedup_scale

    assert dedup_scale.main(["--sizes", "2000", "--no-imagededup", "--no-write"]) == 0


def test_dedup_collection_smoke() -> None:
    from bench import dedup_collection

    assert dedup_collection.main(["--rows", "500", "--no-write"]) == 0


def test_copy_detection_smoke(tmp_path: Path) -> None:
    from bench import copy_detection

    # A folder that does not exist: the script generates its base photos (a clone has no data).
    missing = tmp_path / "no-ukbench-here"
    assert copy_detection.main(["--images", str(missing), "--limit", "4", "--no-write"]) == 0


def test_clusters_speed_smoke() -> None:
    from bench import clusters_speed

    assert clusters_speed.main(["--n", "1000", "--no-extras", "--no-write"]) == 0


def test_query_latency_smoke() -> None:
    from bench import query_latency

    argv = ["--rows", "300", "--queries", "6", "--clients", "2", "--no-write"]
    assert query_latency.main(argv) == 0


def test_hybrid_recall_smoke(tmp_path: Path) -> None:
    from bench import hybrid_recall

    missing = tmp_path / "no-ukbench-here"
    assert hybrid_recall.main(["--images", str(missing), "--limit", "3", "--no-write"]) == 0


def test_ui_render_smoke() -> None:
    from bench import ui_render

    assert ui_render.main(["--images", "60", "--no-write"]) == 0
