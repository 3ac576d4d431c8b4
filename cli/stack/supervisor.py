"""The one helper that supervises every child process of the local stack: Milvus Lite, Redis,
the Celery workers and the UI.

A child runs in its own process group (a terminal's Ctrl-C reaches only the CLI, which stops the
children in order), its output appended to a log file (or ours, in the foreground), and stops
with SIGTERM, then SIGKILL to its whole group after a grace period. Readiness is a probe polled
until it answers, failing early, with the log's tail, when the child exits first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from services.errors import LookalikeError

log = logging.getLogger(__name__)

ErrorType = Callable[[str], LookalikeError]


class Child:
    """A child process in its own process group, its output appended to ``log_file`` (None:
    this process's own output). ``stdin_data`` is written to its stdin, which is then closed
    (a secret that must not show in the process list). ``inherit``: open file descriptors the
    child keeps (a lock that must live as long as the child)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_file: Path | None,
        *,
        cwd: Path | None = None,
        stdin_data: bytes | None = None,
        inherit: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.log_file = log_file
        with contextlib.ExitStack() as opened:
            output = None
            if log_file is not None:
                log_file.parent.mkdir(parents=True, exist_ok=True)
                output = opened.enter_context(log_file.open("ab"))
            self.process = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL if stdin_data is None else subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
                start_new_session=True,
                pass_fds=tuple(inherit),
            )
        if stdin_data is not None:
            self._feed(stdin_data)
        log.info("started %s (pid %d), log %s", name, self.process.pid, log_file or "stdout")

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def wait(self) -> int:
        return self.process.wait()

    def _feed(self, data: bytes) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            with contextlib.suppress(BrokenPipeError):  # it exited at once; readiness says why
                stdin.write(data)
        finally:
            with contextlib.suppress(BrokenPipeError):
                stdin.close()

    def output_tail(self) -> str:
        """Where to read what the child printed, for an error message."""
        if self.log_file is None:
            return "its output is above"
        return f"its log {self.log_file} ends with:\n{log_tail(self.log_file)}"

    def exited_error(self, what: str, error: ErrorType) -> LookalikeError:
        return error(
            f"{self.name} exited with code {self.process.returncode} {what}; {self.output_tail()}"
        )

    def wait_ready(
        self, ready: Callable[[], bool], timeout: float, error: ErrorType, *, every: float = 0.1
    ) -> None:
        """Poll ``ready`` until it answers True; raise ``error`` if the child exits first or
        ``timeout`` seconds pass (the child is then stopped)."""
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise self.exited_error("at start", error)
            if time.monotonic() > deadline:
                self.stop(5.0)
                raise error(f"{self.name} was not ready in {timeout:.0f}s; {self.output_tail()}")
            time.sleep(every)

    def stop(self, grace: float) -> None:
        """SIGTERM to the process, then SIGKILL to its whole group after ``grace`` seconds."""
        if self.process.poll() is not None:
            return
        log.info("stopping %s (pid %d)", self.name, self.process.pid)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, grace)
            self._kill()
        except (KeyboardInterrupt, SystemExit):
            # A second Ctrl-C (or SIGTERM) means "now": cold shutdown, then go on stopping the
            # rest; letting it propagate would leave this child running.
            log.warning("interrupted while %s stops; killing it", self.name)
            self._kill()

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def run_foreground(
    name: str, argv: Sequence[str], env: Mapping[str, str], *, stop_grace: float
) -> int:
    """Run one child with this process's output until it exits, and return its code.

    Ctrl-C (KeyboardInterrupt) or a SystemExit (the CLI turns SIGTERM into one) stops it as the
    stack stops its children (SIGTERM, then SIGKILL after ``stop_grace``) and returns 0: the child
    never outlives the command.
    """
    child = Child(name, argv, env, None)
    try:
        return child.wait()
    except (KeyboardInterrupt, SystemExit):
        return 0
    finally:
        child.stop(stop_grace)


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
