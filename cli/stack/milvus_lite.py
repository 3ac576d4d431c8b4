"""The embedded Milvus Lite server: one process on 127.0.0.1 that every local client shares.

milvus-lite 2.5.x ships the Milvus C++ core as a binary; in TCP mode it serves gRPC to many client
processes (workers, the UI, apps). We start it ourselves rather than through
``milvus_lite.server.Server.start`` so that shutdown is a SIGTERM with a grace period, not a
SIGKILL after two seconds.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cli.stack.net import LOCALHOST, port_open
from cli.stack.supervisor import Child
from services.errors import StoreUnavailableError
from services.settings import EMBEDDED_DB_FILE, Settings

log = logging.getLogger(__name__)


def milvus_healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when a Milvus (Lite or server) at ``uri`` answers a request (on a channel of its
    own: the process's shared one keeps the options of the client that made it)."""
    from services.store import milvus_client

    try:
        client = milvus_client(uri, timeout=timeout, dedicated=True)
        try:
            client.list_collections()
        finally:
            client.close()
    except Exception:  # any failure means "not healthy"; the caller decides what to do
        return False
    return True


class EmbeddedMilvus:
    """A milvus-lite server process with its data under ``home``; a context manager."""

    def __init__(self, home: Path, port: int, *, log_level: str = "ERROR") -> None:
        self.home = home.resolve()
        self.port = port
        self.log_level = log_level
        self._child: Child | None = None
        self._lock: int | None = None

    @property
    def uri(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def db_file(self) -> Path:
        return self.home / EMBEDDED_DB_FILE

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; raise StoreUnavailableError otherwise."""
        with warnings.catch_warnings():
            # milvus-lite imports pkg_resources, which warns on import; not ours to fix.
            warnings.simplefilter("ignore", UserWarning)
            from milvus_lite.server import Server

        if self._child is not None:
            return
        if port_open(self.port):
            raise StoreUnavailableError(
                f"port {self.port} on {LOCALHOST} is already in use; is another `lookalike milvus` "
                "running? Set LOOKALIKE_MILVUS_PORT or LOOKALIKE_MILVUS_URI"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_file(self.home / ".milvus.lock")
        server = Server(str(self.db_file), address=f"{LOCALHOST}:{self.port}")
        binary = Path(server.milvus_bin)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = f"{binary.parent}:{env.get('LD_LIBRARY_PATH', '')}"
        self._child = Child(
            "the embedded Milvus Lite server",
            [str(binary), str(self.db_file), f"{LOCALHOST}:{self.port}", self.log_level],
            env,
            self.home / "logs" / "milvus.log",
            cwd=self.home,
            inherit=[self._lock],
        )
        try:
            self._child.wait_ready(
                lambda: milvus_healthy(self.uri, timeout=1.0), timeout, StoreUnavailableError
            )
        except BaseException:
            self.stop()
            raise
        log.info("Milvus Lite serving %s on %s", self.db_file, self.uri)

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(grace)
        self._release()

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        return self._child.wait() if self._child is not None else 0

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> EmbeddedMilvus:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _lock_file(path: Path) -> int:
    """Hold an exclusive lock so two servers never open the same database. An flock belongs to
    the open file, not the process: the server inherits it, so the lock lives as long as the
    server does, even if this process is killed and leaves the server running."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise StoreUnavailableError(
            f"another process already serves the database in {path.parent}; "
            "stop it or use another LOOKALIKE_HOME"
        ) from exc
    return fd


@contextmanager
def milvus_uri(settings: Settings) -> Iterator[str]:
    """The Milvus URI to use: the configured one, an embedded server already running, or one
    started for the duration of the block."""
    if settings.milvus_uri is not None:
        yield settings.milvus_uri
        return
    uri = settings.effective_milvus_uri
    if port_open(settings.milvus_port) and milvus_healthy(uri):
        yield uri
        return
    with EmbeddedMilvus(settings.home, settings.milvus_port) as server:
        yield server.uri
