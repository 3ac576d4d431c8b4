"""`lookalike watch` and `lookalike sync` as users run them: real processes, real events."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testkit.imagegen import make_photo_like
from tests.ingest.conftest import ROOT, IngestEnv, wait_for
from tests.ingest.images import photo_folder

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(env: IngestEnv) -> dict[str, str]:
    """path -> content id of every stored path."""
    return {p: r.id for r in env.store().iterate() for p in r.all_paths}


def test_watch_ingests_settled_files_fails_bad_ones_and_follows_deletions(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    folder = tmp_path / "watched"
    existing = photo_folder(folder, 3)
    ingest_env.start_worker(concurrency=2)
    assert ingest_env.ingest_json(str(folder), "--wait")["ingested"] == 3
    ingest_env.env["LOOKALIKE_WATCH_QUIET_SECONDS"] = "1.5"
    log = (tmp_path / "watch.log").open("wb")
    watcher = subprocess.Popen(
        [sys.executable, "-m", "cli", "watch", str(folder), "--tag", "watched"],
        env=ingest_env.env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for(lambda: b"watching" in (tmp_path / "watch.log").read_bytes(), 60, "for watch")
        # Written in pieces over ~2.4 s, each gap shorter than the quiet period.
        slow = folder / "sub" / "slow.jpg"
        slow.parent.mkdir()
        make_photo_like(77, (400, 300)).save(tmp_path / "full.jpg", quality=95)
        data = (tmp_path / "full.jpg").read_bytes()
        with slow.open("wb") as out:
            for start in range(0, len(data), len(data) // 4 + 1):
                out.write(data[start : start + len(data) // 4 + 1])
                out.flush()
                time.sleep(0.8)
        quick = folder / "quick.png"
        make_photo_like(78, (64, 48)).save(quick)
        (folder / "notes.jpg").write_text("not a picture, named like one")
        (folder / ".hidden.jpg").write_bytes(data)
        existing[0].unlink()

        def done() -> bool:
            rows = _rows(ingest_env)
            return str(slow) in rows and str(quick) in rows and str(existing[0]) not in rows

        wait_for(done, 90, "for the watcher's jobs")
        rows = _rows(ingest_env)
        assert rows[str(slow)] == hashlib.sha256(data).hexdigest()  # never a half-written file
        assert str(folder / ".hidden.jpg") not in rows
        assert sorted(rows) == sorted(str(p) for p in (slow, quick, *existing[1:]))
        record = ingest_env.store().get([rows[str(quick)]])[0]
        assert record.tags == ("watched",)
        status = json.loads(ingest_env.run_cli("status", "--json").stdout)
        assert status["jobs"][0]["failed"] + status["jobs"][1]["failed"] >= 1  # notes.jpg
        assert watcher.poll() is None  # a bad file never stops the watcher
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        code = watcher.wait(30)
        log.close()
    assert code == 0, (tmp_path / "watch.log").read_text()


def test_sync_reconciles_after_changes_made_while_nothing_watched(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    folder = tmp_path / "library"
    photos = photo_folder(folder, 6)
    ingest_env.start_worker(concurrency=2)
    assert ingest_env.ingest_json(str(folder), "--wait")["ingested"] == 6
    photos[0].unlink()
    moved = photos[1].rename(folder / "moved.jpg")
    new = folder / "new.jpg"
    make_photo_like(99, (96, 72)).save(new)

    dry = ingest_env.run_cli("sync", str(folder), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert json.loads(dry.stdout)["removed_paths"] == sorted([str(photos[0]), str(photos[1])])
    assert str(photos[0]) in _rows(ingest_env)  # a dry run changes nothing

    result = ingest_env.run_cli("sync", str(folder), "--json")
    summary = json.loads(result.stdout)
    assert summary["moved_paths"] == [str(moved)] and summary["indexed"] == 1
    assert sorted(_rows(ingest_env)) == sorted(str(p) for p in (moved, new, *photos[2:]))
    again = json.loads(ingest_env.run_cli("sync", str(folder), "--json").stdout)
    assert again["removed_paths"] == again["moved_paths"] == again["new_files"] == []
