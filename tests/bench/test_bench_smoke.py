"""Every benchmark script runs on tiny inputs, so none of them rots, and prints the tables it
would write; each test reads them back and checks a figure that a broken script gets wrong.
The published figures come from full runs (docs/benchmarks.md)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from bench import _report
from tests.bench.markdown import Table, fraction, number, tables

pytestmark = pytest.mark.slow

RATE_LIMIT = 1e6  # images (or queries) per second: anything above is a broken clock


@pytest.fixture(autouse=True)
def _docs_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """A smoke run must not rewrite docs/benchmarks.md, whatever its flags say."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a smoke run tried to write docs/benchmarks.md")

    monkeypatch.setattr(_report, "write_section", refuse)


def printed(capsys: pytest.CaptureFixture[str], expected: int) -> tuple[str, list[Table]]:
    out = capsys.readouterr().out
    found = tables(out)
    assert len(found) == expected, out
    return out, found


def rate(cell: str) -> float:
    value = number(cell)
    assert 0 < value < RATE_LIMIT, cell
    return value


def test_phash_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import phash_speed

    assert phash_speed.main(["--generate", "5", "--repeat", "1", "--no-write"]) == 0
    out, [table] = printed(capsys, 1)
    assert [row[:3] for row in table.column("method")] == ["(a)", "(b)", "(c)", "(d)"]
    for cell in table.column("images/s"):
        rate(cell)
    assert table.rows[0]["vs imagehash"] == "1.00x"
    # Generated JPEGs carry no EXIF rotation: a full decode hashes exactly as imagehash does.
    assert "equals imagehash (a) bit for bit on 5/5 files" in out


def test_clip_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import clip_speed

    argv = ["--n", "4", "--batch-size", "2", "--repeat", "1", "--texts", "4", "--no-write"]
    assert clip_speed.main(argv) == 0
    _, [table] = printed(capsys, 1)
    modes = [(row["Mode"], row["Batch"]) for row in table.rows]
    cast, autocast = "bf16, weights cast", "bf16, autocast"
    assert modes == [("fp32", "2"), (cast, "2"), (autocast, "2"), (cast, "4")]
    for row in table.rows:
        assert math.isclose(number(row["ms/image"]) * rate(row["images/s"]), 1000, rel_tol=0.1)
        rate(row["texts/s"])
    cosines = [number(cell) for cell in table.column("min cos vs fp32")]
    assert cosines[0] == 1.0
    assert all(0.99 < cosine <= 1.0 for cosine in cosines), cosines  # bf16 keeps the vectors


def test_ingest_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import ingest_speed

    assert ingest_speed.main(["--limit", "20", "--no-clip", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    hash_only = [row for row in table.rows if row["Configuration"] == "hash-only"]
    assert [(row["Worker processes"], row["Batch"]) for row in hash_only] == [
        ("2", "128"),  # the default, hash-only
        ("1", "128"),
        ("2", "32"),
        ("2", "64"),
    ]
    for row in hash_only:
        seconds, images_per_s = number(row["seconds"]), rate(row["images/s"])
        assert math.isclose(seconds * images_per_s, 20, rel_tol=0.05), row  # 20 files a job
        assert 0 < number(row["CPU share"]) < 16, row["CPU share"]  # cores busy during the job


def test_dedup_scale_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import dedup_scale

    assert dedup_scale.main(["--sizes", "2000", "--no-imagededup", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    [row] = table.rows
    assert row["codes"] == "2,000"
    assert 0 < number(row["identity: pairs"]) <= number(row["+ 7 variants: pairs"])
    for found in row["planted pairs found (identity / variants)"].split(" / "):
        hit, planted = fraction(found)
        assert hit == planted > 0, row
    for sample in row["sample = brute force"].split(" / "):
        equal, checked = fraction(sample.replace(" equal", ""))
        assert equal == checked > 0, row


def test_dedup_collection_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import dedup_collection

    assert dedup_collection.main(["--rows", "500", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    [row] = table.rows
    assert (row["rows"], row["radius"]) == ("500", "10")
    found, planted = fraction(row["planted copies in a group"])
    assert found == planted > 0
    whole, groups = fraction(row["planted groups found whole"])
    assert groups == 10 and whole >= 9, row  # one group per 50 rows
    assert number(row["pairs"]) >= planted


def test_copy_detection_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import copy_detection
    from bench._copy_edits import TRANSFORMS

    # A folder that does not exist: the script generates its base photos (a clone has no data).
    missing = tmp_path / "no-ukbench-here"
    argv = ["--images", str(missing), "--limit", "4", "--no-pdq", "--no-write"]
    assert copy_detection.main(argv) == 0
    out, (overall, per_transform, by_box) = printed(capsys, 3)
    now, framed, before = copy_detection.NOW, copy_detection.FRAMES, copy_detection.BEFORE
    for row in overall.rows:
        for name in ("precision", "recall", "F1"):
            assert 0 <= number(row[name]) <= 1, row
    at_default = {m: overall.row(f"{m}, default") for m in (now, framed, before)}
    assert number(at_default[now]["precision"]) >= 0.99
    # Each adds pairs to the one before: the frame rules' to the pHash's, the patches' to both.
    tp = [number(at_default[m]["TP"]) for m in (now, framed, before)]
    assert tp[0] >= tp[1] > tp[2] > 0, tp
    assert per_transform.column("transform") == list(TRANSFORMS)
    now_column, framed_column, before_column = per_transform.header[1:4]
    assert now_column.startswith(now) and framed_column.startswith(framed)
    assert before_column.startswith(before)
    for row in per_transform.rows:
        found = [fraction(row[c])[0] for c in (now_column, framed_column, before_column)]
        assert found[0] >= found[1] >= found[2], row
    # The 8 flips/turns find mirrored and turned copies; the content region a copy in a window.
    for name in ("resize 50%", "JPEG q=30", "mirror", "rotate 90", "blur r=2"):
        assert per_transform.row(name)[before_column].startswith("4/4"), name
    screenshot = per_transform.row("screenshot padding")
    assert screenshot[now_column].startswith("4/4") and screenshot[before_column].startswith("0/4")
    assert "Targets (lookalike now" in out and "Pair precision >= 0.995" in out
    assert by_box.column("transform") == [n for n in TRANSFORMS if n.endswith("% centred")]
    for row in by_box.rows:
        whole, peeled = fraction(row["base's box whole"]), fraction(row["base's box peeled"])
        assert whole[1] + peeled[1] == 4, row  # every base is one or the other
        assert whole[0] + peeled[0] == fraction(per_transform.row(row["transform"])[now_column])[0]


def test_copy_detection_other_set_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import copy_detection

    argv = ["--set", "other", "--images", str(tmp_path / "none"), "--limit", "1", "--no-pdq",
            "--no-write"]  # fmt: skip
    assert copy_detection.main(argv) == 0
    out, (overall, per_transform, _) = printed(capsys, 3)
    assert "2 bases not from the tuning set (1 skimage, 0 imagededup, 1 generated)" in out
    assert "edits seeded with 2027" in out
    for cell in per_transform.column(per_transform.header[1]):
        assert fraction(cell)[1] == 2, cell  # one copy of each base per transform
    assert overall.row(f"{copy_detection.NOW}, default")["hard negatives predicted"] == "0 of 0"


def test_clusters_speed_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import clusters_speed

    argv = ["--n", "1000", "--no-extras", "--projection", "pca", "--no-write"]
    assert clusters_speed.main(argv) == 0
    _, [table] = printed(capsys, 1)
    [row] = table.rows
    assert (row["images"], row["run"], row["k"]) == ("1,000", "k-means k=20", "20")
    assert number(row["ARI"]) >= 0.9, row  # 20 well separated planted centres
    stages = sum(number(row[name]) for name in ("pull s", "cluster s", "map s", "write-back s"))
    assert 0 < stages <= number(row["total s"]) + 0.1, row


def test_clusters_growth_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import clusters_growth

    assert clusters_growth.main(["--n", "1000", "1500", "--first-max", "1000", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    row, prefilled = table.rows

    def rows_written(cell: str) -> int:
        return int(cell.split(" in ")[0].replace(",", ""))

    assert (row["images"], row["added"]) == ("1,000", "10")
    assert rows_written(row["first run writes"]) == 1000
    # 20 well separated planted centres: a run that keeps the ids writes only the newcomers.
    assert rows_written(row["second run now: writes"]) == 10
    assert number(row["now (vector from the scan)"]) > 0
    # Above --first-max the rows are stored with a fit's clusters instead of a timed first run.
    assert prefilled["first run writes"].startswith("not run"), prefilled
    assert rows_written(prefilled["second run now: writes"]) >= 15


def test_query_latency_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import query_latency

    argv = ["--rows", "300", "--queries", "6", "--clients", "2", "--no-write"]
    assert query_latency.main(argv) == 0  # 1 when Milvus disagrees with the exact answers
    _, (main, probes, stages, lean) = printed(capsys, 4)
    assert len(main.rows) == 6
    for row in main.rows:
        assert 0 < number(row["p50 ms"]) <= number(row["p99 ms"]) < 10_000, row
        rate(row["QPS, 2 clients"])
        assert row["recall@20 vs exact (faiss)"] == "1.0000 (1.0000)", row
    assert len(probes.rows) == 8 and all(number(cell) > 0 for cell in probes.column("p50 ms"))
    assert (
        stages.column("mode")
        == lean.column("mode")
        == [
            "hybrid + metadata filter (the target)",
            "hybrid, no filter",
        ]
    )
    for cell in [*lean.column(lean.header[2]), *lean.column(lean.header[3])]:
        assert cell.endswith("(1.0000)"), cell  # the other paths find the same answers


def test_query_latency_renders_the_stored_sizes() -> None:
    """docs/data/query_latency.json renders into the section docs/benchmarks.md shows."""
    import json

    from bench.query_latency import report

    stored = json.loads(report.RESULTS.read_text())
    docs = _report.DOCS.read_text()
    for size in stored.values():
        for paragraph in report.render(size):
            assert paragraph in docs


def test_hybrid_recall_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import hybrid_recall

    missing = tmp_path / "no-ukbench-here"
    assert hybrid_recall.main(["--images", str(missing), "--limit", "3", "--no-write"]) == 0
    _, (radii, transforms) = printed(capsys, 2)
    assert radii.column("radius") == [str(r) for r in hybrid_recall.RADII]
    candidates = [number(cell) for cell in radii.column("candidates / query")]
    assert candidates == sorted(candidates), "a wider radius cannot find fewer candidates"
    for row in radii.rows:
        for name in radii.header[3:6]:
            assert 0 <= number(row[name]) <= 1, row
    found = transforms.header[2]  # "base finds copy: Hamming <= <the default radius>"
    at_default = radii.row(str(int(number(found))))
    assert number(at_default["copies in hybrid top-10"]) >= 0.5
    for name in ("resize 50%", "JPEG q=30", "mirror", "rotate 90"):
        assert transforms.row(name)[found] == "1.000", name


def test_ui_render_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import ui_render

    assert ui_render.main(["--images", "60", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    assert table.column("page")[1:] == [s.label for s in ui_render.scenarios("any")]
    warm = table.header[3]
    for row in table.rows:
        assert 0 <= number(row[warm]) < 60, row
    hybrid = table.row("Search by stored image (hybrid)")["shown"]
    assert number(hybrid) >= 1 and "(hybrid)" in hybrid, hybrid  # the query's planted copies
    assert "60 images" in table.row("Collection")["shown"]
    duplicates = table.row("Duplicates")["shown"]
    assert number(duplicates) >= 3, duplicates  # 3 planted groups in 60 images


def test_duplicates_page_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import duplicates_page

    argv = ["--rows", "1000", "2000", "--old-up-to", "1000", "--no-write"]
    assert duplicates_page.main(argv) == 0  # both pages show every group of the dedup
    _, [table] = printed(capsys, 1)
    assert table.column("rows") == ["1,000", "2,000"]
    for row in table.rows:
        assert (
            number(row["groups (shown: kept / before)"]) >= int(row["rows"].replace(",", "")) / 50
        )
    assert (
        "projected" in table.row("2,000")["before: first render of every session (dedup on render)"]
    )
    assert (
        "projected"
        not in table.row("1,000")["before: first render of every session (dedup on render)"]
    )


def test_s3_ingest_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import os

    from bench import s3_ingest

    before = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
    assert s3_ingest.main(["--generate", "6", "--repeat", "1", "--no-write"]) == 0
    out, [table] = printed(capsys, 1)
    assert table.column("source") == ["local disk", "S3 (moto, 127.0.0.1)"]
    assert table.column("files") == ["6", "6"]
    for cell in table.column("images/s"):
        rate(cell)
    assert table.row("local disk")["vs local"] == "1.00x"
    assert "6 generated 640x480" in out
    assert {k: v for k, v in os.environ.items() if k.startswith("AWS_")} == before


def test_clip_join_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import clip_join

    assert clip_join.main(["--sizes", "1000", "3000", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    assert table.column("vectors") == ["1,000", "3,000"]
    for row in table.rows:
        assert number(row["exact pairs"]) > 0, row
        assert number(row["brute force"]) > 0 and number(row["IVF join"]) > 0, row
        assert number(row["IVF range search (before)"]) > 0, row
        assert 0.99 <= number(row["recall before"]) <= 1, row
        assert 0.99 <= number(row["recall"]) <= 1, row
        assert row["extra"] == "0", row  # every reported pair is checked against the threshold


def test_bulk_read_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import bulk_read

    assert bulk_read.main(["--n", "1500", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    [row] = table.rows
    assert row["rows"] == "1,500"
    assert number(row["speed-up"].rstrip("x")) > 0, row
    assert row["read old"].endswith("/s)") and row["read new"].endswith("/s)"), row
    assert "GiB" in row["dedup new (peak RSS)"], row
    stages = row["clusters new: pull / cluster / map / write-back = total"]
    parts, total = stages.rstrip(" s").split(" = ")
    assert 0 < sum(number(p) for p in parts.split(" / ")) <= number(total) + 0.1, row


def test_lite_scan_cost_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import lite_scan_cost

    assert lite_scan_cost.main(["--n", "3000", "--no-write"]) == 0
    out, [position, pages] = printed(capsys, 2)
    assert position.column("rows before it")[0] == "0"
    before = [number(cell) for cell in position.column("rows before it")]
    assert before == sorted(before) and 0 < before[-1] < 3000
    assert len(pages.rows) == len(lite_scan_cost.PAGES)
    for row in pages.rows:
        assert number(row["ids + vectors"]) > 0, row
        assert row["modelled read"].endswith(" s"), row
    assert "Partitions: " in out


def test_ingest_cache_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import ingest_cache

    assert ingest_cache.main(["--n", "1500", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    [row] = table.rows
    assert row["rows"] == "1,500" and row["cache as ingested (chunks)"] == "12", row
    assert row["chunks after"] == "12", row  # under the compaction threshold: left as written
    assert "GiB" in row["CLIP dedup, first run after ingest (peak RSS)"], row
    stages = row["clusters: pull / cluster / map / write-back = total (peak RSS)"]
    assert "(1,500 rows changed)" in stages, row  # a new collection: every row gets a cluster
    parts, total = re.sub(r" \([^)]*\)", "", stages).rstrip(" s").split(" = ")
    assert 0 < sum(number(p) for p in parts.split(" / ")) <= number(total) + 0.1, row


def test_corner_windows_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from bench import corner_windows

    # No UKBench folder: generated bases, no hard negatives.
    argv = ["--images", str(tmp_path / "absent"), "--limit", "3", "--scales", "0.9"]
    assert corner_windows.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 bases, 4 corner windows each (0.9,), radius 8" in out
    assert "crop 10% off-centre: " in out and "/3 copies" in out
    assert "hard negatives within the radius (either way): 0/0" in out


def test_signal_cost_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import signal_cost

    assert signal_cost.main(["--generate", "4", "--rounds", "1", "--no-write"]) == 0
    out, [table] = printed(capsys, 1)
    stages = {row["stage"]: float(row["ms per image"]) for row in table.rows}
    assert len(stages) == 5 and all(ms > 0 for ms in stages.values())
    parts = sum(ms for name, ms in stages.items() if name != "all")
    assert abs(parts - stages["all"]) < 0.02 * stages["all"] + 0.02
    assert "The patch codes add" in out


def test_patch_join_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import patch_join

    assert patch_join.main(["--rows", "3000", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    [row] = table.rows
    assert (row["rows"], row["patch codes"]) == ("3,000", "48,000")
    assert row["pairs"] == "0"  # random codes: none within 6 bits on one placement
    assert 0 < float(row["peak memory of the process (GiB)"]) < 2


def test_patch_arrival_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import patch_arrival

    assert patch_arrival.main(["--rows", "3000", "--no-write"]) == 0
    _, [table] = printed(capsys, 1)
    without, with_patches = table.rows
    assert [r["index"] for r in table.rows] == ["pHash", "pHash + patch codes"]
    assert without["stored rows"] == with_patches["stored rows"] == "3,000"
    assert float(with_patches["allocated (MiB)"]) > float(without["allocated (MiB)"])
    assert all(float(r["match 128 arrivals (ms)"]) > 0 for r in table.rows)
    assert without["one search's patch stage (ms)"] == "-"
    assert float(with_patches["one search's patch stage (ms)"]) > 0


def test_clip_growth_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import clip_growth

    argv = ["--limit", "16", "--sizes", "0,2000", "--repeat", "1", "--no-write"]
    assert clip_growth.main(argv) == 0
    _, [table] = printed(capsys, 1)
    assert [(r["stored rows"], r["clip index"]) for r in table.rows] == [
        ("0", "FLAT"),
        ("0", "IVF_FLAT"),
        ("2,000", "FLAT"),
        ("2,000", "IVF_FLAT"),
    ]
    for row in table.rows:
        assert math.isclose(number(row["seconds"]) * rate(row["images/s"]), 16, rel_tol=0.05)
        assert number(row["CLIP search, batch of 32 (ms)"]) > 0
    stored = [row for row in table.rows if row["stored rows"] == "2,000"]
    assert all(0 < number(row["recall, cosine >= 0.95"]) <= 1 for row in stored)
    assert number(stored[0]["recall, cosine >= 0.95"]) == 1  # FLAT is exact
