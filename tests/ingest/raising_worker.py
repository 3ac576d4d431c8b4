"""A worker whose decoder raises an unexpected exception on files named *RAISE*.

It stands in for a bug that no test can name in advance (an exception that is not one of
lookalike's own); everything else is the real worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import services.pipeline as pipeline
from ingest.worker import app

__all__ = ["app"]

_real_load = pipeline.load_for_signals


def _raising_load(path: str | Path, **kwargs: Any) -> Any:
    if "RAISE" in str(path):
        raise RuntimeError(f"injected fault on {Path(path).name}")
    return _real_load(path, **kwargs)


pipeline.load_for_signals = _raising_load
