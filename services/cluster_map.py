"""The last cluster map of a collection, kept on disk so the Clusters page opens instantly.

Written by the page after each clustering run (and by ``lookalike clusters``); read back as
plain columns. One JSON file per collection under ``LOOKALIKE_HOME/maps``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.clusters import ClusterReport


@dataclass(frozen=True)
class ClusterMap:
    ids: list[str]
    paths: list[str]
    x: list[float]
    y: list[float]
    cluster: list[int]
    outlier: list[float]
    clusters: list[dict[str, Any]]  # id, size, mean_distance, representatives
    stats: dict[str, Any]

    def __len__(self) -> int:
        return len(self.ids)


def map_file(home: Path, collection: str) -> Path:
    return home / "maps" / f"{collection}.json"


def save(report: ClusterReport, target: Path) -> None:
    points = report.points
    payload = report.to_dict() | {
        "ids": [p.id for p in points],
        "paths": [p.path for p in points],
        "x": [round(p.x, 5) for p in points],
        "y": [round(p.y, 5) for p in points],
        "cluster": [p.cluster for p in points],
        "outlier": [round(p.outlier_score, 4) for p in points],
    }
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
    with os.fdopen(handle, "w") as out:
        json.dump(payload, out)
    Path(temporary).replace(target)


def load(source: Path) -> ClusterMap | None:
    """The saved map, or None when there is none (or it cannot be read: it is rebuilt)."""
    try:
        payload = json.loads(source.read_text())
        return ClusterMap(
            ids=payload["ids"],
            paths=payload["paths"],
            x=payload["x"],
            y=payload["y"],
            cluster=payload["cluster"],
            outlier=payload["outlier"],
            clusters=payload["clusters"],
            stats=payload["stats"],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
