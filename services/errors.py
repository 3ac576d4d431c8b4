"""The one exception hierarchy of lookalike.

Third-party exceptions (Pillow, pymilvus, transformers, redis, botocore) are mapped to these at the
boundary with ``raise OurError(...) from exc``, so callers catch our types only::

    LookalikeError
    ├── ConfigError              a setting is unknown, malformed or contradicts another
    ├── DecodeError              one image cannot be opened; names the file and the reason
    │   ├── UnsupportedImageError    not an image, or a format we cannot read
    │   ├── ImageTooLargeError       over the pixel limit (decompression bomb)
    │   └── SourceReadError          one object cannot be read (gone, denied, too large)
    ├── SourceUnavailableError   object storage cannot be reached (transient: retry later)
    ├── ModelError               the CLIP model cannot be loaded or run
    ├── StoreError               Milvus failed
    │   ├── StoreUnavailableError    cannot reach Milvus (transient: retry later)
    │   ├── CollectionNotFoundError  the collection is gone (dropped since it was opened)
    │   └── SchemaMismatchError      the collection exists with another contract
    ├── FilterError              a metadata filter is invalid; raised before Milvus sees it
    ├── QueryError               a search request is malformed (wrong dimension, no signal)
    └── IngestError              ingestion bookkeeping failed
        ├── LedgerUnavailableError   cannot reach Redis (transient: retry later)
        └── UnknownJobError          no job with that id
"""

from __future__ import annotations

from pathlib import Path


class LookalikeError(Exception):
    """Base of every error lookalike raises on purpose."""


class ConfigError(LookalikeError):
    """A setting is unknown, malformed, or contradicts another; the message names the variable."""


class DecodeError(LookalikeError):
    """An image cannot be decoded. Carries the file and a short reason for failure lists."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")


class UnsupportedImageError(DecodeError):
    """Not an image, or an image format this installation cannot read."""


class ImageTooLargeError(DecodeError):
    """The image has more pixels than the configured limit (a decompression bomb guard)."""


class SourceReadError(DecodeError):
    """One file or object cannot be read from its source: gone, access denied, too large.
    Fails that one entry (recorded with the reason); the rest of its batch goes on."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(path, reason)
        self.args = (f"cannot read {self.path}: {reason}",)


class SourceUnavailableError(LookalikeError):
    """Object storage cannot be reached (connection refused, timeout, 5xx, throttling).
    Transient: the whole batch is retried later."""


class ModelError(LookalikeError):
    """The embedding model cannot be loaded or run."""


class StoreError(LookalikeError):
    """Milvus failed on a request."""


class StoreUnavailableError(StoreError):
    """Milvus cannot be reached. Transient: retrying later may succeed."""


class CollectionNotFoundError(StoreError):
    """The collection does not exist (any more): a client that opened it must open it again."""


class SchemaMismatchError(StoreError):
    """The collection exists but was created with another schema contract (model, dim, version)."""


class FilterError(LookalikeError):
    """A metadata filter is invalid (unknown field, bad value, bad syntax)."""


class QueryError(LookalikeError):
    """A search request is malformed: wrong vector dimension, no query signal, bad parameters."""


class IngestError(LookalikeError):
    """Ingestion bookkeeping (the queue or the job ledger) failed."""


class LedgerUnavailableError(IngestError):
    """Redis cannot be reached. Transient: retrying later may succeed."""


class UnknownJobError(IngestError):
    """No job with this id in the ledger (nor on disk, for ``--resume``)."""
