"""Files that have stopped changing: what a watcher may hand to ingestion.

A file system event says a file changed, not that it is complete: a copy, a camera upload or a
sync client writes a file over seconds. A path is *settled* once its size and modification time
have stayed the same for ``quiet`` seconds; only then is it read, so a half-written file is never
ingested. A path that vanishes meanwhile is dropped (a temporary file renamed away, a deletion).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Seen:
    signature: tuple[int, int]  # size, mtime_ns
    since: float


class SettlingFiles:
    """Paths reported changed, handed out once they have settled."""

    def __init__(self, quiet: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self._clock = clock
        self._seen: dict[str, _Seen] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def changed(self, path: str) -> None:
        """An event touched ``path``: it must be quiet for ``quiet`` seconds from now."""
        self._seen.pop(path, None)
        signature = _signature(path)
        if signature is not None:
            self._seen[path] = _Seen(signature, self._clock())

    def settled(self) -> list[str]:
        """The paths unchanged for ``quiet`` seconds, removed from the watch list, sorted."""
        now = self._clock()
        ready = []
        for path, seen in list(self._seen.items()):
            signature = _signature(path)
            if signature is None:
                del self._seen[path]
            elif signature != seen.signature:
                self._seen[path] = _Seen(signature, now)
            elif now - seen.since >= self.quiet:
                del self._seen[path]
                ready.append(path)
        return sorted(ready)


def _signature(path: str) -> tuple[int, int] | None:
    """Size and mtime of a regular file; None for anything else or nothing."""
    try:
        info = os.stat(path)  # noqa: PTH116 - one call, no Path object per poll
    except OSError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return None
    return info.st_size, info.st_mtime_ns
