"""Real processes for ingestion tests: a Redis server per test, Celery worker processes, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cli.stack.redis_server import RedisServer
from services.code_feed import FeedDeletions
from services.schema import SchemaContract
from services.store import MilvusStore
from tests.conftest import drop_when_reachable, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class IngestEnv:
    """Everything a test needs to run producers and workers against its own Redis."""

    env: dict[str, str]
    redis: RedisServer
    milvus_uri: str
    collection: str
    home: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)

    def run_cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """``lookalike ARGS`` in its own process (a real producer)."""
        return subprocess.run(
            [sys.executable, "-m", "cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )

    def ingest_json(self, *args: str, timeout: float = 180) -> dict[str, object]:
        result = self.run_cli("ingest", *args, "--json", timeout=timeout)
        assert result.returncode == 0, result.stdout + result.stderr
        summary: dict[str, object] = json.loads(result.stdout)
        return summary

    def start_worker(
        self,
        *,
        app: str = "ingest.worker",
        concurrency: int = 1,
        drop_file_privileges: bool = False,
    ) -> subprocess.Popen[bytes]:
        """A real ``celery worker`` process group; returns once it answers a ping.

        ``drop_file_privileges``: when root, drop the capabilities that bypass file modes.
        """
        name = f"test-{uuid.uuid4().hex[:6]}@localhost"
        prefix: list[str] = []
        if drop_file_privileges and os.geteuid() == 0:
            prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
        argv = [
            *prefix,
            sys.executable,
            "-m",
            "celery",
            "-A",
            app,
            "worker",
            "--loglevel=INFO",
            "--queues",
            "lookalike.ingest",
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            name,
        ]
        with (self.home / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                argv,
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.workers.append(process)
        self.names[process.pid] = name
        self.wait_for_worker(name, process)
        return process

    def wait_for_worker_alive(self, process: subprocess.Popen[bytes]) -> None:
        self.wait_for_worker(self.names[process.pid], process, timeout=10)

    def wait_for_worker(
        self, name: str, process: subprocess.Popen[bytes], timeout: float = 60
    ) -> None:
        from services.queue import celery_app
        from services.settings import Settings

        app = celery_app(Settings.from_env(self.env))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert process.poll() is None, self.worker_logs()
            if any(name in reply for reply in app.control.ping(timeout=0.5)):
                return
        raise AssertionError(f"worker {name} did not answer in {timeout}s\n{self.worker_logs()}")

    def kill_worker(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and its pool children at once, as an OOM killer or a crash would."""
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.home.glob("*.log"))

    def store(self) -> MilvusStore:
        """The collection as the CLI and the UI open it: deletions are told to the workers."""
        return MilvusStore.connect(
            self.milvus_uri,
            self.collection,
            SchemaContract.current(None, None),
            notices=FeedDeletions.from_url(self.env["LOOKALIKE_REDIS_URL"]),
        )

    def ledger_progress(self, job_id: str):  # type: ignore[no-untyped-def]
        from services.ledger import JobLedger

        return JobLedger.from_url(self.env["LOOKALIKE_REDIS_URL"]).progress(job_id)


@pytest.fixture
def ingest_env(milvus_uri: str, tmp_path: Path) -> Iterator[IngestEnv]:
    """A private Redis on a free port, a fresh collection, hash-only workers by default."""
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    redis = RedisServer(redis_url, tmp_path / "redis")
    redis.start()
    collection = f"ingest_{uuid.uuid4().hex[:10]}"
    home = tmp_path / "home"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("LOOKALIKE_")} | {
        "LOOKALIKE_MILVUS_URI": milvus_uri,
        "LOOKALIKE_REDIS_URL": redis_url,
        "LOOKALIKE_COLLECTION": collection,
        "LOOKALIKE_HOME": str(home),
        "LOOKALIKE_CLIP_MODEL": "none",
        "LOOKALIKE_INGEST_BATCH_SIZE": "8",
        "LOOKALIKE_VISIBILITY_TIMEOUT": "6",
        "PYTHONPATH": str(ROOT),
    }
    setup = IngestEnv(env, redis, milvus_uri, collection, home)
    yield setup
    for worker in setup.workers:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait(5)
    redis.stop()
    drop_when_reachable(milvus_uri, collection)


WaitFor = Callable[[Callable[[], bool], float], None]


def wait_for(condition: Callable[[], bool], timeout: float, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s {message}")
