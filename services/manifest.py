"""The quarantine manifest: what one ``--move-to`` run moved, enough to put it all back.

JSON Lines inside the quarantine folder, ``DIR/.lookalike-manifest-<UTC time>.jsonl`` (hidden, so
ingesting the folder never picks it up); for a move of objects, an object of the same name under
the quarantine prefix, ``s3://QBUCKET/QPREFIX/.lookalike-manifest-<UTC time>.jsonl`` (keys with a
leading dot are never ingested either). The first line is the header, every other line one moved
file::

    {"lookalike_manifest": 1, "collection": ..., "instance": ..., "created_at": ...,
     "quarantine": ...}
    {"original": ..., "quarantine": ..., "id": ..., "keeper_id": ..., "keeper_path": ...,
     "kind": "near", "row": {the duplicate's row before the move}, "gained": {see services.merge}}

The row is kept whole (hashes, vectors, tags) so an undo can re-create it when it was deleted.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services import objectops
from services.errors import QueryError
from services.merge import Gain
from services.records import ImageRecord, from_row, to_row
from services.schema import MAX_PATHS

MANIFEST_VERSION = 1
MANIFEST_PREFIX = ".lookalike-manifest-"


@dataclass(frozen=True)
class ManifestEntry:
    """One moved file: where it was, where it is, which row it left and for which keeper."""

    original: str
    quarantine: str
    id: str
    keeper_id: str
    keeper_path: str
    kind: str
    row: ImageRecord
    gained: Gain = field(default_factory=Gain)

    def to_dict(self) -> dict[str, Any]:
        return {
            "original": self.original,
            "quarantine": self.quarantine,
            "id": self.id,
            "keeper_id": self.keeper_id,
            "keeper_path": self.keeper_path,
            "kind": self.kind,
            "row": _row_to_json(self.row),
            "gained": self.gained.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManifestEntry:
        """Raises KeyError, TypeError or ValueError on an entry that is not one."""
        return cls(
            original=_text(data, "original"),
            quarantine=_text(data, "quarantine"),
            id=_text(data, "id"),
            keeper_id=_text(data, "keeper_id"),
            keeper_path=str(data.get("keeper_path", "")),
            kind=str(data.get("kind", "")),
            row=_row_from_json(data["row"]),
            gained=Gain.from_dict(data.get("gained") or {}),
        )


@dataclass(frozen=True)
class Manifest:
    """A manifest as read: its header, its good entries, and (line, why) for each bad line."""

    path: Path | str
    collection: str
    entries: list[ManifestEntry]
    problems: list[tuple[int, str]]


def write_manifest(
    folder: Path | str, collection: str, instance: str, entries: Sequence[ManifestEntry]
) -> Path | str:
    """Write ``entries`` to a new manifest in ``folder`` (never over another), synced to disk;
    ``folder`` may be an ``s3://`` prefix (the manifest is then an object there)."""
    now = datetime.now(UTC)
    header = {
        "lookalike_manifest": MANIFEST_VERSION,
        "collection": collection,
        "instance": instance,
        "created_at": now.isoformat(),
        "quarantine": str(folder),
    }
    lines = [json.dumps(header), *(json.dumps(e.to_dict()) for e in entries)]
    stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
    if isinstance(folder, str):
        return _write_object(folder, stamp, "\n".join(lines) + "\n")
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        path = folder / f"{MANIFEST_PREFIX}{stamp}{suffix}.jsonl"
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot name a new manifest in {folder}")


def _write_object(prefix: str, stamp: str, text: str) -> str:
    base = prefix.rstrip("/")
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        uri = f"{base}/{MANIFEST_PREFIX}{stamp}{suffix}.jsonl"
        if objectops.put_new(uri, text.encode("utf-8")):
            return uri
    raise FileExistsError(f"cannot name a new manifest in {prefix}")


def read_manifest(path: Path | str) -> Manifest:
    """The manifest at ``path`` (a file, or an ``s3://`` object); raises QueryError when it is
    missing or not a manifest at all, and lists bad entry lines in ``problems`` (the good ones
    can still be restored)."""
    try:
        lines = _manifest_text(path).splitlines()
    except FileNotFoundError as exc:
        raise QueryError(f"no manifest at {path}: check the path (`ls DIR/.lookalike-*`)") from exc
    except (OSError, UnicodeDecodeError, objectops.ObjectError) as exc:
        raise QueryError(f"cannot read the manifest {path}: {exc}") from exc
    header = _header(lines[0]) if lines else None
    if header is None or header.get("lookalike_manifest") != MANIFEST_VERSION:
        raise QueryError(
            f"{path} is not a lookalike quarantine manifest (version {MANIFEST_VERSION}): "
            "give the .lookalike-manifest-*.jsonl file that `lookalike dedup --move-to` wrote"
        )
    entries, problems = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            entries.append(ManifestEntry.from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append((number, f"line {number} of {path} is not a manifest entry ({exc!r})"))
    return Manifest(path, str(header.get("collection", "")), entries, problems)


def _manifest_text(path: Path | str) -> str:
    if isinstance(path, Path):
        return path.read_text(encoding="utf-8")
    if not objectops.exists(path):
        raise FileNotFoundError(path)
    return objectops.read_bytes(path).decode("utf-8")


def _header(line: str) -> dict[str, Any] | None:
    try:
        header = json.loads(line)
    except ValueError:
        return None
    return header if isinstance(header, dict) else None


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _row_to_json(record: ImageRecord) -> dict[str, Any]:
    row = to_row(record, with_clip=record.clip is not None, max_paths=MAX_PATHS)
    row["phash"] = record.phash.hex()
    return row


def _row_from_json(data: Any) -> ImageRecord:
    if not isinstance(data, dict):
        raise TypeError("row must be an object")
    return from_row({**data, "phash": bytes.fromhex(str(data["phash"]))})
