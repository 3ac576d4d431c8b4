"""A local copy of a collection's CLIP vectors, keyed by content id, so that a bulk read of
hashes and vectors (``lookalike dedup`` with CLIP, the Duplicates page) need not pull every
vector out of Milvus again.

Why: on Milvus Lite a read with vectors is bound by the server's cost of reaching each page (about
3,100 rows/s at 1,000,000 rows, docs/benchmarks.md), while the same read without vectors takes
pages 36 times larger, so 36 times fewer scans from the first key. A row's vector
never changes while its collection instance lives: the id is the content's SHA-256, and the
instance's contract fixes the model. So the folder is one per collection instance, and a vector
found in it is the stored one (up to the worker's precision, where a content is embedded
again).

Who writes it: the store that inserts new contents (a worker's, ``lookalike add``'s) appends
their vectors as one small chunk per write (:func:`append_chunk`), so that the first bulk read
after an ingest finds them; a bulk read that finds the cache short of rows rebuilds it from
Milvus, and one that finds it in many small chunks rewrites it in large ones
(:meth:`VectorCache.compact`).

Layout: chunks written once and never changed, ``<time>-<uuid>.f32`` (float32 rows) then
``.ids`` (32-byte ids, written last: a chunk without it is unfinished and ignored). Readers
and writers need no lock: a chunk appears whole or not at all. Ids of deleted rows stay until
the cache is rebuilt or compacted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

log = logging.getLogger(__name__)

ID_BYTES: Final = 32
CHUNK_ROWS: Final = 65536  # rows a chunk file holds at most
COMPACT_ABOVE: Final = 64  # chunks: a read that finds more rewrites the cache in large ones
_READ_ROWS: Final = 16384  # rows read from a chunk at a time: bounded memory beside the matrix

Ids = npt.NDArray[np.void]  # (n,) of 32-byte ids


def digests(ids: list[str]) -> Ids:
    """Content ids as an array of 32-byte keys: a SHA-256 in hex is its own key; any other id
    (a collection written by someone else) is keyed by its own SHA-256."""
    joined = "".join(ids)
    if len(joined) == 2 * ID_BYTES * len(ids):
        try:
            return np.frombuffer(bytes.fromhex(joined), dtype=f"V{ID_BYTES}")
        except ValueError:
            pass
    raw = b"".join(_key(i) for i in ids)
    return np.frombuffer(raw, dtype=f"V{ID_BYTES}")


def _key(content_id: str) -> bytes:
    if len(content_id) == 2 * ID_BYTES:
        try:
            return bytes.fromhex(content_id)
        except ValueError:
            pass
    return hashlib.sha256(content_id.encode()).digest()


@dataclass(frozen=True)
class _Chunk:
    vectors: Path
    rows: int


class VectorCache:
    """The vectors of one collection instance (``folder``), of dimension ``dim``."""

    def __init__(self, folder: Path, dim: int) -> None:
        self.folder = folder
        self.dim = dim
        self._chunks: list[_Chunk] = []
        self._keys: Ids = np.zeros(0, dtype=f"V{ID_BYTES}")  # sorted
        self._where: npt.NDArray[np.int64] = np.zeros(0, np.int64)  # global row of each key
        self._starts: npt.NDArray[np.int64] = np.zeros(1, np.int64)  # first global row a chunk
        self._load()

    @property
    def rows(self) -> int:
        return int(self._starts[-1])

    def lookup(self, keys: Ids) -> npt.NDArray[np.int64]:
        """For each key its row in the cache, or -1."""
        if not self._keys.size or not keys.size:
            return np.full(keys.size, -1, np.int64)
        at = np.searchsorted(self._keys, keys).clip(0, self._keys.size - 1)
        return np.where(self._keys[at] == keys, self._where[at], -1)

    def read_into(
        self,
        out: npt.NDArray[np.float32],
        targets: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
    ) -> None:
        """``out[targets[i]] = row rows[i]`` of the cache, chunk by chunk in blocks."""
        order = np.argsort(rows, kind="stable")
        rows, targets = rows[order], targets[order]
        bounds = np.searchsorted(rows, self._starts)  # each chunk's slice of the sorted rows
        for number, chunk in enumerate(self._chunks):
            lo_chunk, hi_chunk = int(bounds[number]), int(bounds[number + 1])
            if lo_chunk == hi_chunk:
                continue
            start = int(self._starts[number])
            local, dest = rows[lo_chunk:hi_chunk] - start, targets[lo_chunk:hi_chunk]
            with chunk.vectors.open("rb") as handle:
                for first in range(0, chunk.rows, _READ_ROWS):
                    lo, hi = np.searchsorted(local, [first, first + _READ_ROWS])
                    if lo == hi:
                        continue
                    count = min(_READ_ROWS, chunk.rows - first)
                    handle.seek(first * self.dim * 4)
                    block = np.fromfile(handle, np.float32, count * self.dim)
                    out[dest[lo:hi]] = block.reshape(count, self.dim)[local[lo:hi] - first]

    @property
    def chunks(self) -> int:
        return len(self._chunks)

    def add(self, ids: list[str], vectors: npt.NDArray[np.float32]) -> None:
        """Write ``ids`` and their ``vectors`` (as read from Milvus), in chunks of
        :data:`CHUNK_ROWS`."""
        if not ids:
            return
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(f"vectors of shape {vectors.shape} for {len(ids)} ids of {self.dim}")
        self._write_chunks(ids, vectors)
        self._load()  # once: the index of every chunk is read and sorted again

    def compact(self, ids: list[str], vectors: npt.NDArray[np.float32]) -> None:
        """Replace the chunks this cache loaded by ``ids`` and ``vectors`` (what a read just
        took from them, in :data:`CHUNK_ROWS` chunks): fewer files for the next read, and the
        ids of deleted rows gone. Chunks appended since the load are left as they are; the
        new chunks are whole before an old one goes, so a reader meanwhile misses no row."""
        old = [chunk.vectors for chunk in self._chunks]
        self._write_chunks(ids, vectors)
        for vectors_path in old:
            vectors_path.with_suffix(".ids").unlink(missing_ok=True)
            vectors_path.unlink(missing_ok=True)
        self._load()

    def _write_chunks(self, ids: list[str], vectors: npt.NDArray[np.float32]) -> None:
        for start in range(0, len(ids), CHUNK_ROWS):
            stop = start + CHUNK_ROWS
            append_chunk(self.folder, self.dim, ids[start:stop], vectors[start:stop])

    def clear(self) -> None:
        """Forget every chunk (ids first, so that a reader meanwhile sees none half gone)."""
        for path in sorted(self.folder.glob("*.ids")):
            path.unlink(missing_ok=True)
        for path in self.folder.glob("*.f32*"):
            path.unlink(missing_ok=True)
        self._load()

    def _load(self) -> None:
        chunks: list[_Chunk] = []
        keys: list[Ids] = []
        for ids_path in sorted(self.folder.glob("*.ids")) if self.folder.is_dir() else []:
            vectors = ids_path.with_suffix(".f32")
            raw = ids_path.read_bytes()
            count = len(raw) // ID_BYTES
            if not vectors.is_file() or vectors.stat().st_size != count * self.dim * 4:
                continue  # not ours, or damaged: left out, never read
            chunks.append(_Chunk(vectors, count))
            keys.append(np.frombuffer(raw[: count * ID_BYTES], dtype=f"V{ID_BYTES}"))
        self._chunks = chunks
        self._starts = np.cumsum([0] + [c.rows for c in chunks]).astype(np.int64)
        flat = np.concatenate(keys) if keys else np.zeros(0, dtype=f"V{ID_BYTES}")
        order = np.argsort(flat, kind="stable")
        self._keys, self._where = flat[order], order.astype(np.int64)


def cache_folder(root: Path, collection: str, instance: str) -> Path:
    """The cache folder of one collection instance under ``root``."""
    return root / f"{collection}-{instance}"


def append_chunk(folder: Path, dim: int, ids: list[str], vectors: npt.NDArray[np.float32]) -> None:
    """Write one chunk of ``ids`` and their ``vectors`` into the cache ``folder`` without
    reading the cache (what a worker does after each insert): the vectors, then the ids."""
    if vectors.shape != (len(ids), dim):
        raise ValueError(f"vectors of shape {vectors.shape} for {len(ids)} ids of {dim}")
    if not ids:
        return
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex}"
    _write(stem.with_suffix(".f32"), np.ascontiguousarray(vectors, np.float32).data)
    _write(stem.with_suffix(".ids"), digests(ids).tobytes())


def remove_cache(folder: Path) -> None:
    """Remove the cache ``folder`` of a collection instance that is gone (ids first, so that a
    reader meanwhile finds no chunk half gone); a folder that cannot be removed is logged."""
    if not folder.is_dir():
        return
    try:
        for path in folder.glob("*.ids"):
            path.unlink(missing_ok=True)
        shutil.rmtree(folder)
    except OSError as error:
        log.warning("vector cache %s not removed: %s", folder, error)


def _write(path: Path, data: memoryview | bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    partial.replace(path)
