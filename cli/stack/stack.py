"""The embedded stack on one machine (``lookalike up``): Milvus Lite, Redis, the Celery workers.

Each service is started only when it is needed::

    Milvus   LOOKALIKE_MILVUS_URI set      -> used as given
             a server healthy on the port  -> used as already running
             otherwise                     -> EmbeddedMilvus started here
    Redis    not a redis:// URL on this machine, or something answers PING -> used as is
             otherwise                     -> RedisServer started here
    workers  always started here: one ``celery worker`` with --concurrency N
    extras   ProcessSpec children (the UI's hook), started last

Every child runs in its own process group, so a terminal's Ctrl-C reaches only the CLI, which
stops the children in reverse start order: extras, workers (warm shutdown), Redis, Milvus. What
the stack did not start, it never stops. Every child is a ``supervisor.Child``. Children read
their settings from the environment; the stack writes its Settings back into that environment so
that every child sees the same ones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from cli.stack.milvus_lite import EmbeddedMilvus, milvus_healthy
from cli.stack.net import port_open
from cli.stack.redis_server import RedisServer, local_address, redis_answers, redis_persists
from cli.stack.supervisor import Child
from services.errors import IngestError, LedgerUnavailableError
from services.queue import celery_app
from services.settings import ENV_PREFIX, Settings

log = logging.getLogger(__name__)

STARTED = "started here"
GIVEN = "given by URI"
RUNNING = "already running"
NOT_PERSISTENT = (
    "no persistence: jobs and dedup decisions are lost when it restarts; set appendonly yes"
)

WORKER_READY_TIMEOUT = 120.0  # loading a CLIP model on a slow machine takes a while
WORKER_STOP_GRACE = 30.0  # warm shutdown: running batches finish or are re-delivered


@dataclass(frozen=True)
class ProcessSpec:
    """An extra child of the stack (the UI's hook): started after the workers, stopped first.

    ``env`` is added to the stack's child environment; ``ready`` is polled until it returns
    True (e.g. a port check); its output goes to ``<home>/logs/<name>.log``.
    """

    name: str
    argv: Sequence[str]
    address: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    ready_timeout: float = 60.0
    stop_grace: float = 10.0


class ServiceInfo(NamedTuple):
    """One line of :meth:`Stack.describe`."""

    service: str
    origin: str  # STARTED, GIVEN or RUNNING
    address: str


@dataclass(frozen=True)
class ChildExit:
    """A child of the stack that exited while the stack was up."""

    name: str
    code: int


def child_env(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` with ``settings`` written back as LOOKALIKE_* variables (replacing any there), so
    that ``Settings.from_env()`` in a child reads exactly ``settings``."""
    names = {ENV_PREFIX + name.upper(): name for name in Settings.model_fields}
    env = {key: value for key, value in base.items() if key not in names}
    for variable, name in names.items():
        value = getattr(settings, name)
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, Path):
            value = value.resolve()  # children may run elsewhere
        env[variable] = str(value)
    return env


def redacted(url: str) -> str:
    """``url`` with its password replaced by ``***``, for display."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Stack:
    """Milvus, Redis and the workers for ``settings`` on this machine; a context manager.

    ``env`` is the environment children start from (default: ``os.environ``); the settings are
    written over it. ``extra_processes`` start after the workers (the UI's hook).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        env: Mapping[str, str] | None = None,
        extra_processes: Sequence[ProcessSpec] = (),
        worker_ready_timeout: float = WORKER_READY_TIMEOUT,
        worker_stop_grace: float = WORKER_STOP_GRACE,
    ) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.env = child_env(settings, os.environ if env is None else env)
        self.extra_processes = tuple(extra_processes)
        self.worker_ready_timeout = worker_ready_timeout
        self.worker_stop_grace = worker_stop_grace
        self.worker_hostname = f"lookalike@{socket.gethostname()}-{os.getpid()}"
        self.milvus: EmbeddedMilvus | None = None
        self.redis: RedisServer | None = None
        self.worker: Child | None = None
        self.extras: list[Child] = []
        self._info: list[ServiceInfo] = []
        self._exits: queue.Queue[ChildExit] = queue.Queue()
        self._stopping = threading.Event()
        self._cleanup = contextlib.ExitStack()

    @property
    def milvus_uri(self) -> str:
        return self.settings.effective_milvus_uri

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def describe(self) -> list[ServiceInfo]:
        """What runs where: one (service, origin, address) line per service, in start order."""
        return list(self._info)

    def start(self) -> None:
        """Start what is needed, in order; on any failure (or Ctrl-C) stop what was started."""
        self._stopping.clear()
        try:
            self._start_milvus()
            self._start_redis()
            self._start_worker()
            for spec in self.extra_processes:
                self._start_extra(spec)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop what this stack started, in reverse order: extras, workers, Redis, Milvus."""
        self._stopping.set()
        try:
            self._cleanup.close()
        finally:
            self._cleanup = contextlib.ExitStack()
            self.milvus, self.redis, self.worker, self.extras = None, None, None, []
            self._info = []

    def wait(self, timeout: float | None = None) -> ChildExit | None:
        """Block until a child started here exits (returned) or ``timeout`` passes (None)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            # Short gets keep Ctrl-C and SIGTERM handlers responsive.
            step = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
            with contextlib.suppress(queue.Empty):
                return self._exits.get(timeout=step)
        return None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_milvus(self) -> None:
        settings = self.settings
        if settings.milvus_uri is not None:
            self._info.append(ServiceInfo("Milvus", GIVEN, settings.milvus_uri))
            return
        uri = settings.effective_milvus_uri
        if port_open(settings.milvus_port) and milvus_healthy(uri):
            self._info.append(ServiceInfo("Milvus", RUNNING, uri))
            return
        server = EmbeddedMilvus(self.home, settings.milvus_port)
        server.start()
        self.milvus = server
        self._cleanup.callback(server.stop)
        self._watch("Milvus Lite", server.wait)
        self._info.append(ServiceInfo("Milvus", STARTED, f"{server.uri} (data {server.db_file})"))

    def _start_redis(self) -> None:
        url = self.redis_url
        if local_address(url) is None:
            self._info.append(ServiceInfo("Redis", GIVEN, redacted(url)))
            return
        if redis_answers(url):
            address = redacted(url)
            if redis_persists(url) is False:
                log.warning("the Redis at %s keeps no append-only file", address)
                address += f" ({NOT_PERSISTENT})"
            self._info.append(ServiceInfo("Redis", RUNNING, address))
            return
        server = RedisServer(url, self.home / "redis", log_file=self.logs / "redis.log")
        server.start()
        self.redis = server
        self._cleanup.callback(server.stop)
        self._watch("Redis", server.wait)
        self._info.append(ServiceInfo("Redis", STARTED, f"{redacted(url)} (pid {server.pid})"))

    def _start_worker(self) -> None:
        from ingest.celery_app import worker_argv

        argv = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "ingest.worker",
            *worker_argv(self.settings, hostname=self.worker_hostname),
        ]
        env = {**self.env, "PYTHONUNBUFFERED": "1"}
        worker = Child("the Celery worker", argv, env, self.logs / "worker.log")
        self.worker = worker
        self._cleanup.callback(worker.stop, self.worker_stop_grace)
        self._wait_worker(worker)
        self._watch(worker.name, worker.wait)
        processes = self.settings.worker_concurrency or os.cpu_count() or 1
        self._info.append(
            ServiceInfo(
                "workers",
                STARTED,
                f"{self.worker_hostname}, {processes} processes (log {worker.log_file})",
            )
        )

    def _wait_worker(self, worker: Child) -> None:
        """Ping the worker through the broker until it answers; fail early if it exits."""
        import redis
        from kombu.exceptions import OperationalError

        app = celery_app(self.settings)
        failures: list[Exception] = []

        def answers() -> bool:
            try:
                replies = app.control.ping(destination=[self.worker_hostname], timeout=1.0)
            except (OperationalError, redis.ConnectionError) as exc:
                # A connection pooled from before a restart of Redis fails once; a Redis that
                # stays away fails every ping, and the wait below says so.
                failures.append(exc)
                time.sleep(0.2)
                return False
            return any(self.worker_hostname in reply for reply in replies)

        try:
            worker.wait_ready(answers, self.worker_ready_timeout, IngestError, every=0.0)
        except IngestError as exc:
            if failures and not redis_answers(self.redis_url):
                raise LedgerUnavailableError(
                    f"cannot reach Redis at {redacted(self.redis_url)} to ping the worker: "
                    f"{failures[-1]}"
                ) from exc
            raise
        finally:
            app.close()
        log.info("worker %s is ready", self.worker_hostname)

    def _start_extra(self, spec: ProcessSpec) -> None:
        child = Child(
            spec.name, spec.argv, {**self.env, **spec.env}, self.logs / f"{spec.name}.log"
        )
        self.extras.append(child)
        self._cleanup.callback(child.stop, spec.stop_grace)
        if spec.ready is not None:
            child.wait_ready(spec.ready, spec.ready_timeout, IngestError, every=0.2)
        self._watch(spec.name, child.wait)
        self._info.append(ServiceInfo(spec.name, STARTED, spec.address or spec.argv[0]))

    def _watch(self, name: str, wait: Callable[[], int]) -> None:
        """Report ``name``'s exit to :meth:`wait`, unless the stack is stopping it."""

        def watcher() -> None:
            code = wait()
            if not self._stopping.is_set():
                self._exits.put(ChildExit(name, code))

        threading.Thread(target=watcher, name=f"watch {name}", daemon=True).start()
