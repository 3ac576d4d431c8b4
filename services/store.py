"""The Milvus store: one typed ``VectorStore`` for Milvus Lite, standalone and distributed.

Nothing above this module sees a pymilvus dict: rows come back as :class:`ImageRecord` and hits as
frozen dataclasses. pymilvus exceptions are mapped to :mod:`services.errors` here.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, overload

import numpy as np
import numpy.typing as npt

from services.errors import CollectionNotFoundError, QueryError, StoreError
from services.frames import FRAME_CODES, FRAME_HEX_LENGTH
from services.milvus_errors import is_unimplemented, mapped
from services.patches import PATCH_HEX_LENGTH, PatchTable, join_tables, patch_table
from services.records import FloatVector, ImageRecord, binary_vector, from_row, to_row
from services.schema import (
    ARRAY_FIELDS,
    DIHEDRAL_VARIANTS,
    MAX_PATH_LENGTH,
    MAX_PATHS,
    MAX_SOURCE_LENGTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    MAX_TEXT_LENGTH,
    PHASH_BITS,
    SCALAR_FIELDS,
    UNASSIGNED_CLUSTER,
    SchemaContract,
    clip_search_params,
    phash_search_params,
)
from services.vector_cache import (
    COMPACT_ABOVE,
    VectorCache,
    append_chunk,
    cache_folder,
    digests,
    remove_cache,
)

log = logging.getLogger(__name__)

# Milvus caps one search's limit (topk) at 16384.
MAX_SEARCH_LIMIT = 16384
_GET_BATCH = 512
# Bulk-read pages (docs/benchmarks.md, "Bulk reads"). Milvus Lite serves each page by scanning
# the collection in primary-key order from its first key (about 0.3 us a row), and a page's
# float vectors cost more than in proportion to their bytes past 1 MiB (4 MiB pages time out).
# So the best page grows with the collection: 512 KiB up to BULK_LARGE_FROM rows, where the
# scan is short, 1 MiB above it (1.7x fewer scans at 1,000,000 rows).
BULK_PAGE_BYTES = 512 * 1024
BULK_LARGE_PAGE_BYTES = 1024 * 1024
BULK_LARGE_FROM = 100_000
# A bulk read with vectors takes them from the vector cache when it lacks at most this share of
# the rows (fetched by id); otherwise one read with vectors rebuilds it.
VECTOR_CACHE_MISS = 0.1
LIGHT_PAGE_ROWS = 16384  # rows a page of a bulk read without vectors (ids, paths, clusters)
# Primary-key ranges a bulk read splits the collection into (sha256 hex ids spread evenly over
# the 16 leading hex digits; any other id falls in the first or last range) ...
BULK_KEY_CUTS = tuple("123456789abcdef")
# ... read by this many threads at once, each with its own keyset pagination.
BULK_READ_THREADS = 2
# How long a process waits for the indexes of a collection another process is creating.
INDEX_WAIT_SECONDS = 30.0
# The instance of a collection created before collections carried one (see SchemaContract).
LEGACY_INSTANCE = "legacy"


@dataclass(frozen=True)
class IndexProfile:
    """Which indexes a backend gets. Milvus Lite only knows FLAT/IVF_FLAT and BIN_FLAT."""

    name: str
    clip_index: str
    clip_params: dict[str, Any]
    phash_index: str
    phash_params: dict[str, Any]
    scalar_indexes: bool

    @classmethod
    def lite(cls) -> IndexProfile:
        # IVF_FLAT, not FLAT: Lite scans a FLAT field whole for every query, so a batch's CLIP
        # search at dedup on arrival cost 3.6 s at 1,000,000 rows (docs/benchmarks.md, "CLIP
        # ingest as the collection grows"). Lite takes its own nprobe (it ignores the search's).
        return cls("milvus-lite", "IVF_FLAT", {"nlist": 1024}, "BIN_FLAT", {}, scalar_indexes=False)

    @classmethod
    def server(cls) -> IndexProfile:
        return cls(
            "milvus-server",
            "HNSW",
            {"M": 16, "efConstruction": 200},
            # Exact: a range search on an IVF index only looks in the nearest lists and can miss
            # a near-duplicate across a list boundary. A 64-bit code is 8 bytes a row, so a scan
            # stays cheap (10M rows: 80 MB per query, split across query nodes).
            "BIN_FLAT",
            {},
            scalar_indexes=True,
        )


@dataclass(frozen=True)
class PhashHit:
    """A stored image within the Hamming radius of one of the query's pHash variants."""

    record: ImageRecord
    hamming: int
    variant: int  # index into the query's variants of the closest match
    # The stored values the hit came with, as Milvus holds them (filters.row_predicate reads
    # them); every scalar field when the search asked for whole hits.
    row: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


# What a keeper policy looks at (services.keepers.Candidate), read in the same scan as the hashes
# so that dedup never reads the rows in pairs back one by one.
KEEPER_FIELDS = (
    "path", "width", "height", "bytes", "format", "has_exif_date", "exif_ts",
    "camera_make", "camera_model",
)  # fmt: skip


@dataclass(frozen=True)
class KeeperColumns:
    """The keeper fields of every scanned row, as columns (a few dozen bytes a row)."""

    paths: list[str]
    formats: list[str]
    sizes: npt.NDArray[np.int64]  # (N, 3): width, height, bytes
    exif_ts: npt.NDArray[np.int64]  # -1: no EXIF date
    cameras: list[str] = field(default_factory=list)  # "make\x00model", interned; "" unknown

    def record(self, row: int, content_id: str, code: int) -> ImageRecord:
        """Row ``row`` as a light record: enough for keeper policies and group output."""
        width, height, size = (int(v) for v in self.sizes[row])
        stamp = int(self.exif_ts[row])
        camera = self.cameras[row] if self.cameras else ""
        return ImageRecord(
            id=content_id,
            path=self.paths[row],
            phash=code.to_bytes(8, "big"),
            width=width,
            height=height,
            format=self.formats[row],
            bytes=size,
            exif_datetime=(
                datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None) if stamp >= 0 else None
            ),
            camera_make=camera.partition("\x00")[0] if camera else "",
            camera_model=camera.partition("\x00")[2] if camera else "",
        )


class ContentIds(Sequence[str]):
    """Row ids kept compactly: sha256 hex ids as 32 raw bytes each (a Python str costs ~113),
    any other id as itself."""

    def __init__(self, parts: Sequence[list[str]]) -> None:
        ids = [i for part in parts for i in part]
        packed: npt.NDArray[np.uint8] | None = None
        if all(len(i) == 64 for i in ids):
            try:
                raw = bytes.fromhex("".join(ids))
            except ValueError:
                raw = None
            # Rows of 32 uint8, not dtype "S32": numpy's bytes strip trailing NULs.
            packed = None if raw is None else np.frombuffer(raw, dtype=np.uint8).reshape(-1, 32)
        self._packed = packed
        self._plain: list[str] = [] if packed is not None else ids

    def __len__(self) -> int:
        return len(self._plain) if self._packed is None else len(self._packed)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self._packed is None:
            return self._plain[index]
        return bytes(self._packed[index].tobytes()).hex()


@dataclass(frozen=True)
class HashScan:
    """All rows' hashes as arrays: ``codes`` (N,) uint64, ``variants`` (N, 7) uint64 or None
    when some row lacks its dihedral hashes; ``keepers`` when the scan read the keeper fields."""

    ids: Sequence[str]
    codes: npt.NDArray[np.uint64]
    variants: npt.NDArray[np.uint64] | None
    keepers: KeeperColumns | None = None
    # (N, 4) uint64 frame codes (services.frames: content, windows 90/80/70); a row without
    # them (not migrated) repeats its pHash, so it still matches by its whole frame.
    frames: npt.NDArray[np.uint64] | None = None
    # Every row's patch codes (services.patches), flat; rows without them (not migrated) have none.
    patches: PatchTable | None = None
    clip: npt.NDArray[np.float32] | None = None  # (N, dim), when the scan read the vectors
    cached: int = 0  # rows whose vectors came from the vector cache, not from Milvus


@dataclass(frozen=True)
class VectorScan:
    """Every scanned row's id, first path, stored cluster id and CLIP vector, as columns."""

    ids: Sequence[str]
    paths: list[str]
    clusters: npt.NDArray[np.int64]
    clip: npt.NDArray[np.float32]  # (N, dim), as stored (not normalised)


def _codes(packed: list[bytes]) -> npt.NDArray[np.uint64]:
    return np.frombuffer(b"".join(packed), dtype=">u8").astype(np.uint64)


def _camera(row: Mapping[str, Any]) -> str:
    """A row's camera as one interned string (make, NUL, model); "" when EXIF named none."""
    make, model = str(row.get("camera_make", "")), str(row.get("camera_model", ""))
    return sys.intern(f"{make}\x00{model}") if make or model else ""


def _frames(texts: list[str], codes: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """The (n, 4) frame codes of one batch; a row without them gets its pHash four times."""
    out = np.repeat(codes[:, None], FRAME_CODES, axis=1)
    rows = [i for i, text in enumerate(texts) if len(text) == FRAME_HEX_LENGTH]
    if rows:
        raw = bytes.fromhex("".join(texts[i] for i in rows))
        out[rows] = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, FRAME_CODES)
    return out


def _variants(texts: list[str]) -> npt.NDArray[np.uint64] | None:
    """The (n, 7) dihedral codes of one batch, None if a row has none (written before them)."""
    width = 16 * DIHEDRAL_VARIANTS
    if not all(len(text) == width for text in texts):
        return None
    raw = bytes.fromhex("".join(texts))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, DIHEDRAL_VARIANTS)


@dataclass(frozen=True)
class CodeScan:
    """Every row's id and its 64-bit codes by field name, aligned: ``codes[field]`` is (N,)
    uint64 (the big-endian bytes of a BINARY_VECTOR as one integer)."""

    ids: list[str]
    codes: dict[str, npt.NDArray[np.uint64]]
    patches: list[str] | None = None  # every row's stored patch codes (hex), when read


@dataclass(frozen=True)
class ClipHit:
    record: ImageRecord
    cosine: float


@dataclass(frozen=True)
class Neighbour:
    """A stored row's id and its cosine to a query: a CLIP search that returns no fields."""

    id: str
    cosine: float


class DeletionNotices(Protocol):
    """Who must hear of rows about to leave a collection: the workers' arrival indexes
    (:class:`services.code_feed.FeedDeletions`), which would otherwise still match them."""

    def deleting(self, collection: str, instance: str, ids: Sequence[str]) -> None: ...
    def deleted(self, collection: str, instance: str, ids: Sequence[str]) -> None: ...


class VectorStore(Protocol):
    """What the core needs from a vector database: everything it calls on a store.

    :class:`MilvusStore` is the one backend; the core (search, arrival, dedup, clusters,
    ingestion) is typed against this Protocol, so another backend is one class away."""

    collection: str
    uri: str
    contract: SchemaContract
    instance: str

    @property
    def profile(self) -> IndexProfile: ...
    @property
    def has_clip(self) -> bool: ...
    def stale_indexes(self) -> list[str]: ...
    def close(self) -> None: ...
    def upsert(
        self, records: Sequence[ImageRecord], *, stored: Mapping[str, ImageRecord] | None = None
    ) -> int: ...
    def replace(self, records: Sequence[ImageRecord]) -> None: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def drop(self) -> None: ...
    def get(
        self, ids: Sequence[str], *, with_vectors: bool = False, light: bool = False
    ) -> list[ImageRecord]: ...
    def existing_ids(self, ids: Sequence[str]) -> set[str]: ...
    def count(self, expr: str = "") -> int: ...
    def iterate(
        self,
        expr: str = "",
        *,
        with_vectors: bool = False,
        batch_size: int = 1000,
        light: bool = False,
    ) -> Iterator[ImageRecord]: ...
    def scan_hashes(
        self,
        expr: str = "",
        *,
        batch_size: int = 16384,
        keepers: bool = False,
        progress: Callable[[int], None] | None = None,
        vectors: bool = False,
    ) -> HashScan: ...
    def scan_codes(
        self, fields: Sequence[str], *, patches: bool = False, batch_size: int = 16384
    ) -> CodeScan: ...
    def scan_vectors(self, expr: str = "") -> VectorScan: ...
    def cluster_assignments(self) -> dict[str, int]: ...
    def search_phash(
        self,
        variants: Sequence[bytes],
        max_hamming: int,
        expr: str,
        limit: int,
        *,
        whole: bool = False,
        with_vectors: bool = True,
    ) -> list[PhashHit]: ...
    def search_phash_groups(
        self,
        groups: Sequence[Sequence[bytes]],
        max_hamming: int,
        expr: str,
        limit: int,
        *,
        whole: bool = False,
        with_vectors: bool = True,
    ) -> list[list[PhashHit]]: ...
    def search_clip(
        self, vector: FloatVector, expr: str, limit: int, *, whole: bool = False
    ) -> list[ClipHit]: ...
    def search_clip_many(
        self, vectors: Sequence[FloatVector], expr: str, limit: int, *, whole: bool = False
    ) -> list[list[ClipHit]]: ...
    def clip_neighbours(
        self, vectors: Sequence[FloatVector], limit: int
    ) -> list[list[Neighbour]]: ...


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Silence a chatty third-party logger for the duration of a call we expect to complain."""
    chatty = logging.getLogger(logger_name)
    level = chatty.level
    chatty.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        chatty.setLevel(level)


def drop_collection(
    uri: str, collection: str, *, token: str | None = None, vector_cache: Path | None = None
) -> bool:
    """Drop ``collection`` whatever its contract; True when it existed. ``vector_cache``: the
    folder under which stores keep vector caches; the dropped instance's is removed."""

    client = milvus_client(uri, token=token)
    with mapped(f"drop collection {collection}", uri):
        try:
            existed = bool(client.has_collection(collection))
            if existed:
                description = client.describe_collection(collection).get("description", "")
                instance = SchemaContract.instance_of(description) or LEGACY_INSTANCE
                client.drop_collection(collection)
                if vector_cache is not None:
                    remove_cache(cache_folder(vector_cache, collection, instance))
        finally:
            client.close()
    return existed


def stored_contract(
    uri: str, collection: str, *, token: str | None = None, timeout: float = 10.0
) -> SchemaContract | None:
    """The contract of an existing lookalike collection, None when there is no such collection."""

    client = milvus_client(uri, token=token, timeout=timeout)
    with mapped(f"describe collection {collection}", uri):
        try:
            if not client.has_collection(collection, timeout=timeout):
                return None
            description = client.describe_collection(collection, timeout=timeout).get(
                "description", ""
            )
        finally:
            client.close()
    return SchemaContract.from_description(collection, description)


# pymilvus pings every 10 s even on an idle channel; a gRPC server's default policy (Milvus
# Lite's) allows one ping in 5 minutes without data and answers more with GOAWAY
# "too_many_pings", which fails the next call on that channel. Ping idle channels less often
# than that; calls have their own timeouts, so a dead server is still noticed on use. pymilvus
# shares one channel per address and token across the process, made with the options of the
# first client and kept after every client closed: so every MilvusClient lookalike makes passes
# these (a health check with pymilvus's own would set 10 s pings for the whole process).
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 330_000, "grpc.keepalive_permit_without_calls": False}


def milvus_client(
    uri: str, *, token: str | None = None, timeout: float = 10.0, dedicated: bool = False
) -> Any:
    """A pymilvus client for ``uri`` (no request is sent yet). ``dedicated``: on a channel of
    its own, closed with the client (a health check), not the process's shared one."""
    from pymilvus import MilvusClient

    with mapped("connect", uri):
        return MilvusClient(
            uri=uri,
            token=token or "",
            timeout=timeout,
            grpc_options=dict(GRPC_OPTIONS),
            dedicated=dedicated,
        )


class MilvusStore:
    """:class:`VectorStore` over one Milvus collection.

    Made from a client (any object with pymilvus ``MilvusClient``'s methods) without a request;
    :meth:`open` then checks, or creates, and loads the collection. :meth:`connect` does both.
    """

    instance: str  # the collection instance (SchemaContract.instance_of), known once opened

    def __init__(
        self,
        client: Any,
        collection: str,
        contract: SchemaContract,
        *,
        uri: str = "",
        timeout: float = 10.0,
        profile: IndexProfile | None = None,
        create_instance: str | None = None,
        notices: DeletionNotices | None = None,
        vector_cache: Path | None = None,
    ) -> None:
        self.uri = uri
        # Where bulk reads keep a copy of the CLIP vectors (services.vector_cache), one folder
        # per collection instance; None: every bulk read pulls them from Milvus.
        self._vector_cache_root = vector_cache
        # Told before and after rows are deleted (None: nobody indexes this collection's codes).
        self._notices = notices
        # The instance id the collection gets if this store creates it (None: a new random one);
        # `lookalike migrate` re-creates a collection under its old instance (services.migration).
        self._create_instance = create_instance
        self.collection = collection
        self.contract = contract
        self._client = client
        self._timeout = timeout
        self._profile = profile
        self._with_clip = contract.clip_dim is not None
        self._clip_dim = contract.clip_dim

    @classmethod
    def connect(
        cls,
        uri: str,
        collection: str,
        contract: SchemaContract,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        profile: IndexProfile | None = None,
        create: bool = True,
        notices: DeletionNotices | None = None,
        vector_cache: Path | None = None,
    ) -> MilvusStore:
        """A store over ``collection`` at ``uri``, opened (and created when ``create``);
        ``notices`` hear of every deletion through it; ``vector_cache``: the folder under which
        bulk reads keep the CLIP vectors they read."""
        client = milvus_client(uri, token=token, timeout=timeout)
        store = cls(
            client,
            collection,
            contract,
            uri=uri,
            timeout=timeout,
            profile=profile,
            notices=notices,
            vector_cache=vector_cache,
        )
        try:
            return store.open(create=create)
        except BaseException:
            client.close()
            raise

    def open(self, *, create: bool = True) -> MilvusStore:
        """Check the collection's contract (creating the collection first when it does not
        exist and ``create``), wait for its indexes, and load it. Returns ``self``."""
        with mapped(f"open collection {self.collection}", self.uri):
            if self._profile is None:
                self._profile = self._detect_profile()
            self._ensure_collection(create=create)
        return self

    @property
    def client(self) -> Any:
        """The pymilvus client (for probes that time Milvus itself, e.g. the benchmarks)."""
        return self._client

    @property
    def profile(self) -> IndexProfile:
        if self._profile is None:
            raise StoreError(f"collection {self.collection!r} is not open yet (call open())")
        return self._profile

    @property
    def has_clip(self) -> bool:
        return self._with_clip

    def close(self) -> None:
        self._client.close()

    def _detect_profile(self) -> IndexProfile:
        # Milvus Lite does not implement GetVersion; every Milvus server does.
        # pymilvus logs every failed RPC at ERROR; this one failing is the expected answer.
        try:
            with _quiet("pymilvus.decorators"):
                version = self._client.get_server_version(timeout=self._timeout)
        except Exception as exc:
            if is_unimplemented(exc):
                return IndexProfile.lite()
            raise
        log.info("Milvus server %s at %s", version, self.uri)
        return IndexProfile.server()

    def _ensure_collection(self, *, create: bool) -> None:
        client, timeout = self._client, self._timeout
        if not client.has_collection(self.collection, timeout=timeout):
            if not create:
                raise CollectionNotFoundError(
                    f"no collection {self.collection!r} at {self.uri}; ingest images first"
                )
            self._create_collection()
        # Read back, not assumed: another process may have created it first.
        description = client.describe_collection(self.collection, timeout=timeout).get(
            "description", ""
        )
        stored = SchemaContract.from_description(self.collection, description)
        stored.check_compatible(self.collection, self.contract)
        self.instance = SchemaContract.instance_of(description) or LEGACY_INSTANCE
        self._wait_for_indexes()
        client.load_collection(self.collection, timeout=timeout)

    def stale_indexes(self) -> list[str]:
        """The vector fields whose index is not the one this release builds on this backend: a
        collection created by an earlier release (CLIP on FLAT on Milvus Lite)."""
        with mapped(f"describe the indexes of {self.collection}", self.uri):
            current = self._detect_profile()
            wanted = {"phash": current.phash_index, "clip": current.clip_index}
            return [
                name
                for name in self._vector_fields()
                if self._client.describe_index(self.collection, name, timeout=self._timeout).get(
                    "index_type"
                )
                != wanted[name]
            ]

    def rebuild_indexes(self, fields: Sequence[str]) -> None:
        """Replace the index of each of ``fields`` by the one this release builds on this
        backend (the store's profile from then on). The collection is released
        meanwhile: searches by every client fail until it is loaded again at the end."""
        with mapped(f"rebuild the indexes of {self.collection}", self.uri):
            self._profile = self._detect_profile()
            self._client.release_collection(self.collection, timeout=self._timeout)
            for name in fields:
                self._client.drop_index(self.collection, name, timeout=self._timeout)
            self._client.create_index(
                self.collection, self._index_params(fields), timeout=self._timeout
            )
            self._client.load_collection(self.collection, timeout=self._timeout)

    def _vector_fields(self) -> list[str]:
        return ["phash", *(["clip"] if self.contract.clip_dim is not None else [])]

    def _wait_for_indexes(self) -> None:
        """Return once every vector field has its index. pymilvus creates a collection, then
        its indexes, then loads it: a process that loads it in between (a second worker on a
        fresh collection) fails every search with "no index found". A collection left without
        an index (its creator was killed in between) gets it from here after the wait."""
        deadline = time.monotonic() + INDEX_WAIT_SECONDS
        while True:
            missing = [
                name
                for name in self._vector_fields()
                if not self._client.list_indexes(
                    self.collection, field_name=name, timeout=self._timeout
                )
            ]
            if not missing:
                return
            if time.monotonic() > deadline:
                log.warning(
                    "collection %s has no index on %s; creating it", self.collection, missing
                )
                self._client.create_index(
                    self.collection, self._index_params(missing), timeout=self._timeout
                )
                return
            time.sleep(0.1)

    def _index_params(self, fields: Sequence[str]) -> Any:
        contract, profile = self.contract, self.profile
        index = self._client.prepare_index_params()
        if "phash" in fields:
            index.add_index(
                "phash",
                index_type=profile.phash_index,
                metric_type=contract.phash_metric,
                params=profile.phash_params,
            )
        if "clip" in fields:
            index.add_index(
                "clip",
                index_type=profile.clip_index,
                metric_type=contract.clip_metric,
                params=profile.clip_params,
            )
        return index

    def _create_collection(self) -> None:
        from pymilvus import DataType
        from pymilvus.exceptions import MilvusException

        contract = self.contract
        schema = self._client.create_schema(
            auto_id=False,
            enable_dynamic_field=False,
            description=contract.to_description(instance=self._create_instance or uuid.uuid4().hex),
        )
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("phash", DataType.BINARY_VECTOR, dim=PHASH_BITS)
        if contract.clip_dim is not None:
            schema.add_field("clip", DataType.FLOAT_VECTOR, dim=contract.clip_dim)
        varchar = {
            "path": MAX_PATH_LENGTH,
            "source": MAX_SOURCE_LENGTH,
            "format": 16,
            "camera_make": MAX_TEXT_LENGTH,
            "camera_model": MAX_TEXT_LENGTH,
            "ahash": 32,
            "dhash": 32,
            "colorhash": 32,
            "dup_of": 64,
            "phash_dihedral": 16 * DIHEDRAL_VARIANTS,
            "frame_codes": FRAME_HEX_LENGTH,
            "patch_codes": PATCH_HEX_LENGTH,
        }
        for name in SCALAR_FIELDS:
            if name in varchar:
                schema.add_field(name, DataType.VARCHAR, max_length=varchar[name])
            elif name == "paths":
                schema.add_field(
                    name,
                    DataType.ARRAY,
                    element_type=DataType.VARCHAR,
                    max_capacity=MAX_PATHS,
                    max_length=MAX_PATH_LENGTH,
                )
            elif name == "tags":
                schema.add_field(
                    name,
                    DataType.ARRAY,
                    element_type=DataType.VARCHAR,
                    max_capacity=MAX_TAGS,
                    max_length=MAX_TAG_LENGTH,
                )
            elif name in {"has_exif_date", "has_gps"}:
                schema.add_field(name, DataType.BOOL)
            elif name in {"gps_lat", "gps_lon"}:
                schema.add_field(name, DataType.DOUBLE)
            elif name == "dup_cosine":
                schema.add_field(name, DataType.FLOAT)
            elif name in {"width", "height", "cluster", "dup_hamming", "path_count"}:
                schema.add_field(name, DataType.INT32)
            else:
                schema.add_field(name, DataType.INT64)
        index = self._index_params(self._vector_fields())
        if self.profile.scalar_indexes:
            for name in ("source", "tags", "format", "exif_ts", "cluster", "camera_model"):
                index.add_index(name, index_type="INVERTED")
        try:
            self._client.create_collection(
                self.collection,
                schema=schema,
                index_params=index,
                consistency_level="Strong",
                timeout=self._timeout,
            )
        except MilvusException:
            if not self._client.has_collection(self.collection, timeout=self._timeout):
                raise
            log.info("collection %s was created by another process meanwhile", self.collection)
            return
        log.info("created collection %s (%s)", self.collection, self.profile.name)

    # -- writes -------------------------------------------------------------------------------

    def upsert(
        self, records: Sequence[ImageRecord], *, stored: Mapping[str, ImageRecord] | None = None
    ) -> int:
        """Write ``records`` idempotently; returns the number of distinct contents written.

        Records with the same id (same content) are merged first; rows already stored keep their
        first path, ingest time and cluster, and gain the new paths and tags. ``stored``: the
        rows as the caller just read them (under a lock), to save reading them again.

        Contents not stored are *inserted*, stored ones upserted: Milvus Lite deletes the old row
        of an upsert by scanning the collection (32 rows cost 8 ms at 0 rows, 132 ms at 300,000;
        an insert 9 ms at any size: docs/benchmarks.md). The read that tells them apart is of a
        Strong-consistency collection, and ingestion holds the ids' content locks from that read
        to this write, so no other writer can store one of those ids in between.
        """
        if not records:
            return 0
        unique: dict[str, ImageRecord] = {}
        for record in records:
            self._check_clip(record)
            previous = unique.get(record.id)
            unique[record.id] = record.merged_with(previous) if previous else record
        if stored is None:
            stored = {r.id: r for r in self.get(list(unique), with_vectors=False)}

        def row(record: ImageRecord) -> dict[str, Any]:
            return to_row(record, with_clip=self._with_clip, max_paths=MAX_PATHS)

        fresh = [unique[i] for i in unique if i not in stored]
        new = [row(record) for record in fresh]
        known = [row(unique[i].merged_with(stored[i])) for i in unique if i in stored]
        if new:
            with mapped(f"insert {len(new)} rows", self.uri):
                self._client.insert(self.collection, new, timeout=self._timeout)
            self._append_to_cache(fresh)
        if known:
            with mapped(f"upsert {len(known)} rows", self.uri):
                self._client.upsert(self.collection, known, timeout=self._timeout)
        return len(new) + len(known)

    def replace(self, records: Sequence[ImageRecord]) -> None:
        """Write ``records`` exactly as given (no merging): for removing paths from rows."""
        for record in records:
            self._check_clip(record)
        rows = [to_row(r, with_clip=self._with_clip, max_paths=MAX_PATHS) for r in records]
        if rows:
            with mapped(f"replace {len(rows)} rows", self.uri):
                self._client.upsert(self.collection, rows, timeout=self._timeout)

    def _check_clip(self, record: ImageRecord) -> None:
        if not self._with_clip:
            return
        if record.clip is None or record.clip.shape != (self._clip_dim,):
            shape = None if record.clip is None else record.clip.shape
            raise QueryError(
                f"{record.path}: CLIP vector of shape {shape}, collection "
                f"{self.collection!r} stores ({self._clip_dim},)"
            )

    def delete(self, ids: Sequence[str]) -> None:
        """Delete the rows of ``ids``. The notices hear of them first (so no worker matches a
        row being deleted; if they cannot be told, nothing is deleted) and again after (so an
        index loaded from Milvus meanwhile, which may still have read them, forgets them)."""
        if not ids:
            return
        if self._notices is not None:
            self._notices.deleting(self.collection, self.instance, ids)
        with mapped(f"delete {len(ids)} rows", self.uri):
            self._client.delete(self.collection, ids=list(ids), timeout=self._timeout)
        if self._notices is not None:
            self._notices.deleted(self.collection, self.instance, ids)

    def drop(self) -> None:
        """Drop the collection, and this instance's vector cache with it."""
        with mapped(f"drop collection {self.collection}", self.uri):
            self._client.drop_collection(self.collection, timeout=self._timeout)
        if self._vector_cache_root is not None:
            remove_cache(self._cache_folder())

    # -- reads --------------------------------------------------------------------------------

    def _output_fields(self, with_vectors: bool, *, light: bool = False) -> list[str]:
        """Fields to read; ``light`` leaves out the ARRAY fields (slow in bulk on Milvus Lite)."""
        fields = ["id", "phash", *(f for f in SCALAR_FIELDS if not (light and f in ARRAY_FIELDS))]
        if with_vectors and self._with_clip:
            fields.append("clip")
        return fields

    def _search_fields(self, with_vectors: bool, *, whole: bool) -> list[str]:
        """Search hits carry no pHash (Lite cannot return it). ``whole``: with paths and tags,
        which cost nothing for a few dozen hits and ~1 ms a row in bulk on Milvus Lite; without
        them, read whole rows of the hits that matter with :meth:`get`."""
        return [n for n in self._output_fields(with_vectors, light=not whole) if n != "phash"]

    def get(
        self, ids: Sequence[str], *, with_vectors: bool = False, light: bool = False
    ) -> list[ImageRecord]:
        """Stored records for ``ids`` (missing ids are left out), in no particular order.

        ``light``: without ``paths`` and ``tags`` (see :meth:`iterate`)."""
        records: list[ImageRecord] = []
        for start in range(0, len(ids), _GET_BATCH):
            chunk = list(ids[start : start + _GET_BATCH])
            with mapped(f"get {len(chunk)} rows", self.uri):
                rows = self._client.get(
                    self.collection,
                    ids=chunk,
                    output_fields=self._output_fields(with_vectors, light=light),
                    timeout=self._timeout,
                )
            records.extend(from_row(dict(row)) for row in rows)
        return records

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), _GET_BATCH):
            chunk = list(ids[start : start + _GET_BATCH])
            with mapped(f"look up {len(chunk)} ids", self.uri):
                rows = self._client.get(
                    self.collection, ids=chunk, output_fields=["id"], timeout=self._timeout
                )
            found.update(str(row["id"]) for row in rows)
        return found

    def count(self, expr: str = "") -> int:
        """Rows matching ``expr`` (a compiled filter; "" for all)."""
        with mapped("count rows", self.uri):
            rows = self._client.query(
                self.collection, filter=expr, output_fields=["count(*)"], timeout=self._timeout
            )
        return int(rows[0]["count(*)"])

    def iterate(
        self,
        expr: str = "",
        *,
        with_vectors: bool = False,
        batch_size: int = 1000,
        light: bool = False,
    ) -> Iterator[ImageRecord]:
        """Every stored record matching ``expr``, streamed in batches (bounded memory).

        ``light``: without ``paths`` and ``tags`` (records then list their first path only),
        which is many times faster for whole-collection scans on Milvus Lite.
        """
        fields = self._output_fields(with_vectors, light=light)
        for batch in self._batches(expr, fields, batch_size):
            for row in batch:
                yield from_row(dict(row))

    def _batches(self, expr: str, fields: list[str], batch_size: int) -> Iterator[Any]:
        """The rows matching ``expr`` as the query iterator's batches (lists of row dicts)."""
        # Milvus Lite has no MVCC timestamp to give; pymilvus warns and uses the client's.
        with mapped("start a query iterator", self.uri), _quiet("pymilvus.orm.iterator"):
            iterator = self._client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter=expr,
                output_fields=fields,
                timeout=self._timeout,
            )
        try:
            while True:
                with mapped("read a query batch", self.uri):
                    batch = iterator.next()
                if not batch:
                    return
                yield batch
        finally:
            iterator.close()

    def scan_hashes(
        self,
        expr: str = "",
        *,
        batch_size: int = 16384,
        keepers: bool = False,
        progress: Callable[[int], None] | None = None,
        vectors: bool = False,
    ) -> HashScan:
        """Ids, pHashes and dihedral pHashes of every row matching ``expr``: the one bulk read
        that all-pairs dedup needs, as compact arrays (32 + 64 bytes a row), each batch packed
        as it arrives. ``keepers``: the keeper fields too (:data:`KEEPER_FIELDS`), as columns;
        ``vectors``: the CLIP vectors too, as one float32 matrix (read by :meth:`bulk_pages`,
        or, with a vector cache, mostly from the cache: :meth:`_scan_with_cache`).
        ``progress``: called with the rows read so far after each batch."""
        cache = self.vector_cache() if vectors else None
        if cache is not None:
            return self._scan_with_cache(cache, expr, batch_size, keepers, progress)
        return self._scan_from_milvus(expr, batch_size, keepers, progress, vectors)

    def _scan_from_milvus(
        self,
        expr: str,
        batch_size: int,
        keepers: bool,
        progress: Callable[[int], None] | None,
        vectors: bool,
    ) -> HashScan:
        """:meth:`scan_hashes`, every field read from Milvus."""
        fields = [
            "id", "phash", "phash_dihedral", "frame_codes", "patch_codes",
            *(KEEPER_FIELDS if keepers else ()),
        ]  # fmt: skip
        if vectors and self._with_clip:
            pages: Iterator[_Page] = self.bulk_pages(expr, [*fields, "clip"])
        else:
            pages = (_Page(list(batch), None) for batch in self._batches(expr, fields, batch_size))
        ids: list[list[str]] = []
        codes: list[npt.NDArray[np.uint64]] = []
        variants: list[npt.NDArray[np.uint64] | None] = []
        frames: list[npt.NDArray[np.uint64]] = []
        patches: list[PatchTable] = []
        clips = None
        if vectors and self._with_clip:
            clips = _VectorRows(self.count(expr), self._clip_dim or 0)
        paths: list[str] = []
        formats: list[str] = []
        cameras: list[str] = []
        sizes: list[npt.NDArray[np.int64]] = []
        stamps: list[npt.NDArray[np.int64]] = []
        for page in pages:
            batch = page.rows
            ids.append([str(row["id"]) for row in batch])
            codes.append(
                page.codes
                if page.codes is not None
                else _codes([binary_vector(row["phash"]) for row in batch])
            )
            variants.append(_variants([str(row.get("phash_dihedral", "")) for row in batch]))
            frames.append(_frames([str(row.get("frame_codes", "")) for row in batch], codes[-1]))
            patches.append(patch_table([str(row.get("patch_codes", "")) for row in batch]))
            if clips is not None and page.clip is not None:
                clips.add(page.clip)
            if keepers:
                paths += [str(row["path"]) for row in batch]
                formats += [sys.intern(str(row["format"])) for row in batch]
                cameras += [_camera(row) for row in batch]
                sizes.append(
                    np.array(
                        [(row["width"], row["height"], row["bytes"]) for row in batch],
                        dtype=np.int64,
                    ).reshape(-1, 3)
                )
                stamps.append(
                    np.array(
                        [row["exif_ts"] if row["has_exif_date"] else -1 for row in batch],
                        dtype=np.int64,
                    )
                )
            if progress is not None:
                progress(sum(len(part) for part in ids))
        columns = None
        if keepers:
            columns = KeeperColumns(
                paths,
                formats,
                np.concatenate(sizes) if sizes else np.zeros((0, 3), dtype=np.int64),
                np.concatenate(stamps) if stamps else np.zeros(0, dtype=np.int64),
                cameras,
            )
        complete = [v for v in variants if v is not None]
        return HashScan(
            ContentIds(ids),
            np.concatenate(codes) if codes else np.zeros(0, dtype=np.uint64),
            np.concatenate(complete) if complete and len(complete) == len(variants) else None,
            columns,
            frames=(
                np.concatenate(frames) if frames else np.zeros((0, FRAME_CODES), dtype=np.uint64)
            ),
            patches=join_tables(patches),
            clip=clips.matrix() if clips is not None else None,
        )

    def vector_cache(self) -> VectorCache | None:
        """This collection instance's vector cache, where the store keeps one."""
        if self._vector_cache_root is None or not self._with_clip or self._clip_dim is None:
            return None
        return VectorCache(self._cache_folder(), self._clip_dim)

    def _cache_folder(self) -> Path:
        assert self._vector_cache_root is not None
        return cache_folder(self._vector_cache_root, self.collection, self.instance)

    def _scan_with_cache(
        self,
        cache: VectorCache,
        expr: str,
        batch_size: int,
        keepers: bool,
        progress: Callable[[int], None] | None,
    ) -> HashScan:
        """:meth:`scan_hashes` with vectors, from a cache that holds most of them: the hashes
        in pages without vectors, the vectors from the cache (:meth:`_cached_vectors`). A cache
        that lacks more than :data:`VECTOR_CACHE_MISS` of the rows is rebuilt from one read
        with vectors, as without a cache."""
        if self._cache_covers(cache, expr):
            scan = self._scan_from_milvus(expr, batch_size, keepers, progress, vectors=False)
            found = self._cached_vectors(cache, scan.ids, whole=not expr)
            if found is not None:
                clip, cached = found
                return replace(scan, clip=clip, cached=cached)
        scan = self._scan_from_milvus(expr, batch_size, keepers, progress, vectors=True)
        assert scan.clip is not None
        self._rebuild_cache(cache, scan.ids, scan.clip)
        return scan

    def _cache_covers(self, cache: VectorCache, expr: str) -> bool:
        """Whether ``cache`` holds enough rows to serve a read of ``expr`` (it may still lack
        too many of them: :meth:`_cached_vectors` decides by id)."""
        return cache.rows >= (1.0 - VECTOR_CACHE_MISS) * self.count(expr)

    def _cached_vectors(
        self, cache: VectorCache, ids: Sequence[str], *, whole: bool
    ) -> tuple[npt.NDArray[np.float32], int] | None:
        """The vectors of ``ids`` from ``cache``, the few it lacks read by id (and added to it),
        and how many came from the cache; None when it lacks more than
        :data:`VECTOR_CACHE_MISS` of them, or changed during the read. ``whole``: ``ids`` are
        every row of the collection, so a cache of many small chunks (appended by ingestion)
        is rewritten in large ones, without deleted rows."""
        rows = cache.lookup(digests(list(ids)))
        missing = np.flatnonzero(rows < 0)
        if missing.size > VECTOR_CACHE_MISS * max(1, len(ids)):
            return None
        clip = np.empty((len(ids), cache.dim), np.float32)
        found = np.flatnonzero(rows >= 0)
        try:
            cache.read_into(clip, found, rows[found])
        except FileNotFoundError:  # another process rebuilt it meanwhile: read it all
            log.info("vector cache %s changed during a read", cache.folder)
            return None
        fetched = [ids[i] for i in missing.tolist()]
        if fetched:
            clip[missing] = self._vectors_by_id(fetched)
        try:
            if whole and cache.chunks > COMPACT_ABOVE:
                cache.compact(list(ids), clip)
            elif fetched:
                cache.add(fetched, clip[missing])
        except OSError as error:  # a cache that cannot be written is only slower next time
            log.warning("vector cache %s not written: %s", cache.folder, error)
        return clip, len(found)

    def _rebuild_cache(
        self, cache: VectorCache, ids: Sequence[str], clip: npt.NDArray[np.float32]
    ) -> None:
        log.info("vector cache %s: rebuilt from %d rows read", cache.folder, len(ids))
        try:
            cache.clear()
            cache.add(list(ids), clip)
        except OSError as error:
            log.warning("vector cache %s not written: %s", cache.folder, error)

    def _append_to_cache(self, records: Sequence[ImageRecord]) -> None:
        """Add the vectors of newly inserted ``records`` to the vector cache, if this store
        keeps one: one small chunk, without reading the cache (the next whole read compacts
        the chunks)."""
        if self._vector_cache_root is None or self._clip_dim is None:
            return
        rows = [r for r in records if r.clip is not None]
        if not rows:
            return
        folder = self._cache_folder()
        vectors = np.stack([np.asarray(r.clip, np.float32) for r in rows])
        try:
            append_chunk(folder, self._clip_dim, [r.id for r in rows], vectors)
        except OSError as error:  # the rows are stored: a bulk read will fetch their vectors
            log.warning("vector cache %s not written: %s", folder, error)

    def _vectors_by_id(self, ids: Sequence[str]) -> npt.NDArray[np.float32]:
        """The stored CLIP vectors of ``ids`` (all present), in their order."""
        out = np.empty((len(ids), self._clip_dim or 0), np.float32)
        at = {key: i for i, key in enumerate(ids)}
        rows = self.bulk_page_rows(["id", "clip"])
        for start in range(0, len(ids), rows):
            chunk = ids[start : start + rows]
            where = "id in [" + ", ".join(_quoted(key) for key in chunk) + "]"
            with mapped(f"read the vectors of {len(chunk)} rows", self.uri):
                result = self._client.query(
                    self.collection, filter=where, output_fields=["id", "clip"],
                    timeout=self._timeout,
                )  # fmt: skip
            page = _page(result, self._clip_dim or 0)
            if page.clip is None or len(page.rows) != len(chunk):
                raise StoreError(f"{len(chunk) - len(page.rows)} rows vanished during a read")
            out[[at[str(row["id"])] for row in page.rows]] = page.clip
        return out

    def scan_codes(
        self, fields: Sequence[str], *, patches: bool = False, batch_size: int = 16384
    ) -> CodeScan:
        """Ids and 64-bit binary codes (BINARY_VECTOR ``fields``) of every row: the bulk read
        that builds an in-process code index (8 bytes a code, packed as each batch arrives);
        ``patches``: and every row's stored patch codes ("" where it has none)."""
        ids: list[str] = []
        codes: dict[str, list[npt.NDArray[np.uint64]]] = {name: [] for name in fields}
        texts: list[str] = []
        read = ["id", *fields] + (["patch_codes"] if patches else [])
        for batch in self._batches("", read, batch_size):
            ids += [str(row["id"]) for row in batch]
            for name in fields:
                codes[name].append(_codes([binary_vector(row[name]) for row in batch]))
            if patches:
                texts += [str(row.get("patch_codes", "")) for row in batch]
        return CodeScan(
            ids,
            {
                name: np.concatenate(parts) if parts else np.zeros(0, np.uint64)
                for name, parts in codes.items()
            },
            texts if patches else None,
        )

    def scan_vectors(self, expr: str = "") -> VectorScan:
        """Id, first path, cluster id and CLIP vector of every row matching ``expr`` (what
        clustering reads), without the ARRAY fields; QueryError on a hash-only collection.
        With a vector cache that holds most rows, the rows are read without their vectors and
        the vectors taken from the cache (as :meth:`scan_hashes`)."""
        if not self._with_clip:
            raise QueryError(f"collection {self.collection!r} is hash-only (no CLIP vectors)")
        cache = self.vector_cache()
        if cache is not None and self._cache_covers(cache, expr):
            light = self._vector_scan(expr, vectors=False)
            found = self._cached_vectors(cache, light.ids, whole=not expr)
            if found is not None:
                return replace(light, clip=found[0])
        scan = self._vector_scan(expr, vectors=True)
        if cache is not None:
            self._rebuild_cache(cache, scan.ids, scan.clip)
        return scan

    def cluster_assignments(self) -> dict[str, int]:
        """The cluster id of every row that holds one, by row id (Milvus Lite has no ``not``,
        so a reader that wants the rows outside a filter leaves out the ones it has)."""
        assigned: dict[str, int] = {}
        for page in self.bulk_pages(
            f"cluster != {UNASSIGNED_CLUSTER}", ["id", "cluster"], page_rows=LIGHT_PAGE_ROWS
        ):
            assigned.update((str(row["id"]), int(row["cluster"])) for row in page.rows)
        return assigned

    def _vector_scan(self, expr: str, *, vectors: bool) -> VectorScan:
        """:meth:`scan_vectors` from Milvus; without ``vectors`` its ``clip`` is (N, 0)."""
        fields = ["id", "path", "cluster", *(["clip"] if vectors else [])]
        page_rows = None if vectors else LIGHT_PAGE_ROWS
        ids: list[list[str]] = []
        paths: list[str] = []
        clusters: list[int] = []
        clips = _VectorRows(self.count(expr), self._clip_dim or 0) if vectors else None
        for page in self.bulk_pages(expr, fields, page_rows=page_rows):
            ids.append([str(row["id"]) for row in page.rows])
            paths += [str(row["path"]) for row in page.rows]
            clusters += [int(row["cluster"]) for row in page.rows]
            if clips is not None and page.clip is not None:
                clips.add(page.clip)
        return VectorScan(
            ContentIds(ids),
            paths,
            np.asarray(clusters, dtype=np.int64),
            clips.matrix() if clips is not None else np.zeros((len(paths), 0), np.float32),
        )

    def bulk_pages(
        self,
        expr: str,
        fields: Sequence[str],
        *,
        page_rows: int | None = None,
        threads: int = BULK_READ_THREADS,
    ) -> Iterator[_Page]:
        """Every row matching ``expr`` exactly once, as pages: each of 16 primary-key ranges is
        read by keyset pagination (``id > last`` in primary-key order, the query iterator's
        own method, so any Milvus serves it), ``threads`` ranges at a time, and each page's
        vectors are decoded as one array rather than row by row. Pages come in key order;
        ``page_rows`` (at most) is chosen from the collection's size unless given."""
        rows = page_rows or self.bulk_page_rows(fields)
        bounds = ["", *BULK_KEY_CUTS, None]
        spans = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
        with ThreadPoolExecutor(max(1, threads)) as pool:
            for pages in pool.map(lambda span: self._range_pages(expr, fields, span, rows), spans):
                yield from pages

    def bulk_page_rows(self, fields: Sequence[str]) -> int:
        """Rows a page of :meth:`bulk_pages` holds for ``fields``, from the collection's size."""
        width = 4 * (self._clip_dim or 0) if "clip" in fields else 0
        size = BULK_LARGE_PAGE_BYTES if self.count() > BULK_LARGE_FROM else BULK_PAGE_BYTES
        return max(64, size // (width + 256))

    def _range_pages(
        self, expr: str, fields: Sequence[str], span: tuple[str, str | None], rows: int
    ) -> list[_Page]:
        low, high = span
        pages: list[_Page] = []
        last: str | None = None
        while True:
            bounds = [f"id > {_quoted(last)}" if last is not None else f"id >= {_quoted(low)}"]
            if high is not None:
                bounds.append(f"id < {_quoted(high)}")
            where = " and ".join(bounds) + (f" and ({expr})" if expr else "")
            with mapped(f"read a page of {rows} rows", self.uri):
                result = self._client.query(
                    self.collection,
                    filter=where,
                    output_fields=list(fields),
                    limit=rows,
                    timeout=self._timeout,
                    # The query iterator's flags: results in primary-key order.
                    iterator="True",
                    reduce_stop_for_best="True",
                )
            page = _page(result, self._clip_dim or 0)
            if page.rows:
                pages.append(page)
                last = str(page.rows[-1]["id"])
            if len(page.rows) < rows:
                return pages

    def search_phash(
        self,
        variants: Sequence[bytes],
        max_hamming: int,
        expr: str,
        limit: int,
        *,
        whole: bool = False,
        with_vectors: bool = True,
    ) -> list[PhashHit]:
        """Stored images within ``max_hamming`` (inclusive) of any variant.

        One multi-vector range search; each id keeps its smallest distance over the variants.
        ``whole``: the hits carry paths and tags too (for few expected hits); ``with_vectors``:
        their CLIP vectors (for a rerank).
        """
        return self.search_phash_groups(
            [variants], max_hamming, expr, limit, whole=whole, with_vectors=with_vectors
        )[0]

    def search_phash_groups(
        self,
        groups: Sequence[Sequence[bytes]],
        max_hamming: int,
        expr: str,
        limit: int,
        *,
        whole: bool = False,
        with_vectors: bool = True,
    ) -> list[list[PhashHit]]:
        """:meth:`search_phash` for several queries (each a group of variants) in one request."""
        flat = [variant for group in groups for variant in group]
        if not groups or any(not group for group in groups):
            raise QueryError("a pHash search needs at least one query hash")
        if any(len(v) != PHASH_BITS // 8 for v in flat):
            raise QueryError("query pHashes must be 8 bytes (64 bits) each")
        params = phash_search_params(max_hamming)
        results = self._search(
            "phash", flat, params, expr, limit, with_vectors=with_vectors, whole=whole
        )
        merged: list[list[PhashHit]] = []
        offset = 0
        for group in groups:
            best: dict[str, PhashHit] = {}
            for variant in range(len(group)):
                for hit in results[offset + variant]:
                    distance = round(float(hit["distance"]))
                    current = best.get(str(hit["id"]))
                    if current is None or distance < current.hamming:
                        row = _hit_row(hit)
                        best[str(row["id"])] = PhashHit(from_row(row), distance, variant, row)
            offset += len(group)
            merged.append(sorted(best.values(), key=lambda h: (h.hamming, h.record.id)))
        return merged

    def search_clip(
        self, vector: FloatVector, expr: str, limit: int, *, whole: bool = False
    ) -> list[ClipHit]:
        """The ``limit`` stored images nearest to ``vector`` by cosine, best first (``whole``:
        with paths and tags)."""
        return self.search_clip_many([vector], expr, limit, whole=whole)[0]

    def search_clip_many(
        self, vectors: Sequence[FloatVector], expr: str, limit: int, *, whole: bool = False
    ) -> list[list[ClipHit]]:
        """:meth:`search_clip` for several query vectors in one request."""
        data = self._clip_queries(vectors)
        params = clip_search_params(ef=max(64, limit))
        results = self._search("clip", data, params, expr, limit, with_vectors=False, whole=whole)
        return [
            [ClipHit(_hit_record(hit), float(hit["distance"])) for hit in hits] for hits in results
        ]

    def clip_neighbours(self, vectors: Sequence[FloatVector], limit: int) -> list[list[Neighbour]]:
        """The ids of the ``limit`` stored rows nearest to each vector, best first, and their
        cosines: no other field is read (on Milvus Lite reading a hit's fields costs more than
        the search itself, docs/benchmarks.md, "CLIP ingest as the collection grows")."""
        data = self._clip_queries(vectors)
        params = clip_search_params(ef=max(64, limit))
        results = self._search("clip", data, params, "", limit, fields=[])
        return [
            [Neighbour(str(hit["id"]), float(hit["distance"])) for hit in hits] for hits in results
        ]

    def _clip_queries(self, vectors: Sequence[FloatVector]) -> list[list[float]]:
        if not self._with_clip:
            raise QueryError(
                f"collection {self.collection!r} is hash-only (no CLIP vectors); "
                "search by image with a Hamming radius instead"
            )
        queries = [np.asarray(vector, dtype=np.float32) for vector in vectors]
        for query in queries:
            if query.shape != (self._clip_dim,):
                raise QueryError(
                    f"query vector has shape {query.shape}, the collection stores "
                    f"({self._clip_dim},)"
                )
        return [query.tolist() for query in queries]

    def _search(
        self,
        field: str,
        data: list[Any],
        params: dict[str, Any],
        expr: str,
        limit: int,
        *,
        with_vectors: bool = False,
        whole: bool = False,
        fields: list[str] | None = None,
    ) -> Any:
        """``fields``: what the hits return (default: :meth:`_search_fields`)."""
        with mapped(f"run a {field} search", self.uri):
            return self._client.search(
                self.collection,
                data=data,
                anns_field=field,
                search_params=params,
                filter=expr,
                limit=min(limit, MAX_SEARCH_LIMIT),
                # Milvus Lite fails to return binary vectors from a search: leave phash out.
                output_fields=self._search_fields(with_vectors, whole=whole)
                if fields is None
                else fields,
                timeout=self._timeout,
            )


def _quoted(text: str) -> str:
    """A VARCHAR literal for a Milvus filter."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _VectorRows:
    """The vectors of a bulk read, copied page by page into one float32 matrix made for the
    rows counted before the read (grown if rows arrive meanwhile): a list of pages and their
    concatenation would hold every vector twice (4 GiB at 1,000,000 rows of 512-d)."""

    def __init__(self, expected: int, dim: int) -> None:
        self._rows = np.empty((max(0, expected), dim), dtype=np.float32)
        self._used = 0

    def add(self, page: npt.NDArray[np.float32]) -> None:
        end = self._used + len(page)
        if end > len(self._rows):
            grown = np.empty((max(end, len(self._rows) * 5 // 4), self._rows.shape[1]), np.float32)
            grown[: self._used] = self._rows[: self._used]
            self._rows = grown
        self._rows[self._used : end] = page
        self._used = end

    def matrix(self) -> npt.NDArray[np.float32]:
        """The rows added, in order (a view: the unused tail is never read)."""
        return self._rows[: self._used]


@dataclass(frozen=True)
class _Page:
    """One page of a bulk read: the scalar values as row dicts, the vectors as arrays."""

    rows: Sequence[Mapping[str, Any]]
    clip: npt.NDArray[np.float32] | None
    codes: npt.NDArray[np.uint64] | None = None


def _page(result: Any, dim: int) -> _Page:
    """Decode one query result. pymilvus leaves vector fields in the response until a row is
    read, then copies each vector into a list of Python floats (most of a bulk read's client
    time); here they become arrays straight from the response bytes. Any other field that
    pymilvus decodes lazily is read its own way, row by row."""
    count = len(result)
    lazy = {data.field_name: data for data in getattr(result, "_lazy_field_data", ())}
    vectors = {name: lazy.pop(name) for name in ("clip", "phash") if name in lazy}
    if lazy or not isinstance(result, list):
        rows = [dict(row) for row in result]
        matrix = None
        if rows and "clip" in rows[0]:
            matrix = np.asarray([r["clip"] for r in rows], np.float32).reshape(count, dim)
        return _Page(rows, matrix)
    rows = [list.__getitem__(result, i) for i in range(count)]
    clip = _float_matrix(vectors["clip"], count, dim) if "clip" in vectors else None
    codes = None
    if "phash" in vectors:
        codes = np.frombuffer(vectors["phash"].vectors.binary_vector, dtype=">u8").astype(np.uint64)
    return _Page(rows, clip, codes)


def _float_matrix(data: Any, count: int, dim: int) -> npt.NDArray[np.float32]:
    """(count, dim) float32 from a FLOAT_VECTOR FieldData: its packed floats are the tail of the
    serialized FloatArray (tag, length, then little-endian float32s)."""
    raw = data.vectors.float_vector.SerializeToString()
    size = count * dim * 4
    if size == 0:
        return np.zeros((count, dim), dtype=np.float32)
    return np.frombuffer(raw[len(raw) - size :], dtype="<f4").reshape(count, dim).copy()


def _hit_row(hit: Any) -> dict[str, Any]:
    row = dict(hit["entity"])
    row.setdefault("id", hit["id"])
    return row


def _hit_record(hit: Any) -> ImageRecord:
    return from_row(_hit_row(hit))


def _conforms(store: MilvusStore) -> VectorStore:
    """mypy checks here that MilvusStore implements every method of the Protocol."""
    return store
