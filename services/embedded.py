"""The embedded Milvus Lite server: one process on 127.0.0.1 that every local client shares.

milvus-lite 2.5.x ships the Milvus C++ core as a binary; in TCP mode it serves gRPC to many client
processes (workers, the UI, apps). We start it ourselves rather than through
``milvus_lite.server.Server.start`` so that shutdown is a SIGTERM with a grace period, not a
SIGKILL after two seconds.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.errors import StoreUnavailableError
from services.settings import Settings

log = logging.getLogger(__name__)

DB_FILE = "milvus.db"
_HOST = "127.0.0.1"


def free_port(host: str = _HOST) -> int:
    """A TCP port nothing listens on right now (for servers started by tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = _HOST, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def milvus_healthy(uri: str, timeout: float = 2.0) -> bool:
    """True when a Milvus (Lite or server) at ``uri`` answers a request."""
    from pymilvus import MilvusClient

    try:
        client = MilvusClient(uri=uri, timeout=timeout)
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
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None

    @property
    def uri(self) -> str:
        return f"http://{_HOST}:{self.port}"

    @property
    def db_file(self) -> Path:
        return self.home / DB_FILE

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers; raise StoreUnavailableError otherwise."""
        with warnings.catch_warnings():
            # milvus-lite imports pkg_resources, which warns on import; not ours to fix.
            warnings.simplefilter("ignore", UserWarning)
            from milvus_lite.server import Server

        if self._process is not None:
            return
        if port_open(self.port):
            raise StoreUnavailableError(
                f"port {self.port} on {_HOST} is already in use; is another `lookalike milvus` "
                "running? Set LOOKALIKE_MILVUS_PORT or LOOKALIKE_MILVUS_URI"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_file(self.home / ".milvus.lock")
        server = Server(str(self.db_file), address=f"{_HOST}:{self.port}")
        binary = Path(server.milvus_bin)
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = f"{binary.parent}:{env.get('LD_LIBRARY_PATH', '')}"
        self._process = subprocess.Popen(
            [str(binary), str(self.db_file), f"{_HOST}:{self.port}", self.log_level],
            cwd=self.home,
            env=env,
            stdin=subprocess.DEVNULL,
            # Its own process group: Ctrl-C in a terminal reaches us, and we stop it in order.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._release()
                raise StoreUnavailableError(
                    f"the embedded Milvus Lite server exited with code {code} at start "
                    f"(data: {self.db_file})"
                )
            if milvus_healthy(self.uri, timeout=1.0):
                log.info("Milvus Lite serving %s on %s", self.db_file, self.uri)
                return
            time.sleep(0.1)
        self.stop()
        raise StoreUnavailableError(f"the embedded Milvus Lite server did not answer in {timeout}s")

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                log.warning("Milvus Lite did not stop in %.0fs; killing it", grace)
                process.kill()
                process.wait()
        self._release()

    def wait(self) -> int:
        """Block until the server exits; returns its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

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
    """Hold an exclusive lock so two servers never open the same database."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
