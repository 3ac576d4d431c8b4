"""Dedup on arrival through workers' in-process indexes: two real Celery workers, each with its
own index, real Redis (queue, ledger, code feed) and the real Milvus Lite server.

Which worker takes a job is chosen by cancelling the other's consumer (the process, and its
index, stay alive), so that each worker's index is built before the rows it must then see."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from PIL import Image

from services.queue import QUEUE, celery_app
from services.settings import Settings
from testkit.imagegen import make_photo_like
from tests.ingest.conftest import IngestEnv
from tests.ingest.images import mirror_copies

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def photos(folder: Path, seeds: range) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"photo_{seed}.jpg"
        make_photo_like(seed, (160, 120)).save(path, quality=90)
        paths.append(path)
    return paths


class Workers:
    """Two workers; :meth:`only` lets one of them take the next jobs."""

    def __init__(self, env: IngestEnv) -> None:
        self.env = env
        self.app = celery_app(Settings.from_env(env.env))
        self.processes = [env.start_worker(concurrency=1), env.start_worker(concurrency=1)]

    def name(self, process: subprocess.Popen[bytes]) -> str:
        return self.env.names[process.pid]

    def only(self, chosen: subprocess.Popen[bytes]) -> None:
        for process in self.processes:
            destination = [self.name(process)]
            if process is chosen:
                self.app.control.add_consumer(QUEUE, destination=destination, reply=True)
            else:
                self.app.control.cancel_consumer(QUEUE, destination=destination, reply=True)

    def succeeded(self, process: subprocess.Popen[bytes]) -> int:
        log = self.env.home / f"{self.name(process)}.log"
        return log.read_text(errors="replace").count("succeeded in")

    def ingest_at(self, process: subprocess.Popen[bytes], paths: list[Path]) -> dict[str, object]:
        self.only(process)
        before = self.succeeded(process)
        summary = self.env.ingest_json(*(str(p) for p in paths), "--wait")
        assert self.succeeded(process) > before, self.env.worker_logs()  # it did take the job
        return summary


def rows_by_path(env: IngestEnv) -> dict[str, tuple[str, str]]:
    """path -> (row id, dup_of)."""
    return {p: (r.id, r.dup_of) for r in env.store().iterate() for p in r.all_paths}


def test_each_worker_matches_rows_the_other_stored(ingest_env: IngestEnv, tmp_path: Path) -> None:
    workers = Workers(ingest_env)
    first, second = workers.processes
    workers.ingest_at(first, photos(tmp_path / "w1", range(1)))  # each builds its index now
    workers.ingest_at(second, photos(tmp_path / "w2", range(1, 2)))
    by_second = photos(tmp_path / "b", range(10, 14))
    workers.ingest_at(second, by_second)
    by_first = photos(tmp_path / "a", range(20, 24))
    workers.ingest_at(first, by_first)

    copies_at_first = mirror_copies(by_second, tmp_path / "mb")
    copies_at_second = mirror_copies(by_first, tmp_path / "ma")
    assert workers.ingest_at(first, copies_at_first)["near_duplicates"] == 4
    assert workers.ingest_at(second, copies_at_second)["near_duplicates"] == 4

    rows = rows_by_path(ingest_env)
    for originals, copies in ((by_second, copies_at_first), (by_first, copies_at_second)):
        for original, copy in zip(originals, copies, strict=True):
            assert rows[str(copy)][1] == rows[str(original)][0]


def test_deleted_rows_are_never_matched_and_a_restarted_worker_rebuilds(
    ingest_env: IngestEnv, tmp_path: Path
) -> None:
    workers = Workers(ingest_env)
    first, second = workers.processes
    workers.ingest_at(first, photos(tmp_path / "w", range(1)))
    doomed = photos(tmp_path / "d", range(30, 33))
    workers.ingest_at(first, doomed)
    store = ingest_env.store()
    rows = rows_by_path(ingest_env)
    store.delete([rows[str(p)][0] for p in doomed])  # as dedup --move-to does: the feed is told

    late = workers.ingest_at(first, mirror_copies(doomed, tmp_path / "md"))
    assert late["near_duplicates"] == 0
    assert all(dup == "" for _, dup in rows_by_path(ingest_env).values())

    kept = photos(tmp_path / "k", range(40, 43))
    workers.ingest_at(second, kept)
    ingest_env.kill_worker(first)
    workers.processes[0] = restarted = ingest_env.start_worker(concurrency=1)
    requal = tmp_path / "rq"
    requal.mkdir()
    for path in kept:
        Image.open(path).save(requal / path.name, quality=60)  # other bytes, a near pHash
    assert workers.ingest_at(restarted, sorted(requal.iterdir()))["near_duplicates"] == 3
    rows = rows_by_path(ingest_env)
    for path in kept:
        assert rows[str(requal / path.name)][1] == rows[str(path)][0]
