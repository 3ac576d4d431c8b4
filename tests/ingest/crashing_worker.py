"""A worker whose decoder kills its own process on files named *POISON*.

It stands in for an image that crashes the decoder (a segfault or the OOM killer), which
cannot be produced on demand; everything else is the real worker.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import services.pipeline as pipeline
from ingest.worker import app

__all__ = ["app"]

_real_load = pipeline.load_for_signals


def _crashing_load(path: str | Path, **kwargs: Any) -> Any:
    if "POISON" in str(path):
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_load(path, **kwargs)


pipeline.load_for_signals = _crashing_load
