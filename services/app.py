"""Wiring: settings in, a connected store and (unless hash-only) an embedder out.

The one place where the stages are put together for the CLI, the workers and the UI.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.code_feed import FeedDeletions
from services.embed import Embedder, create_embedder
from services.schema import SchemaContract
from services.settings import Settings
from services.store import MilvusStore

VECTOR_CACHE_FOLDER = "vectors"  # under the home: services.vector_cache, one folder a collection


@dataclass(frozen=True)
class Lookalike:
    """A connected store with the embedder whose vectors it holds."""

    settings: Settings
    store: MilvusStore
    embedder: Embedder | None

    def close(self) -> None:
        self.store.close()


def vector_cache_root(settings: Settings) -> Path | None:
    """Where this machine's stores keep their vector caches (services.vector_cache), or None
    when ``settings`` turn them off."""
    return settings.home / VECTOR_CACHE_FOLDER if settings.vector_cache else None


def contract_for(embedder: Embedder | None) -> SchemaContract:
    """The schema contract a collection written with ``embedder`` carries."""
    if embedder is None:
        return SchemaContract.current(None, None)
    return SchemaContract.current(embedder.model_id, embedder.dim)


def connect(
    settings: Settings,
    uri: str,
    *,
    embedder: Embedder | None = None,
    load_model: bool = True,
    collection: str | None = None,
) -> Lookalike:
    """Open (creating if needed) the configured collection at ``uri``.

    ``embedder`` given: use it. Otherwise the configured model is loaded when ``load_model``.
    """
    if embedder is None and load_model:
        embedder = create_embedder(settings)
    store = MilvusStore.connect(
        uri,
        collection or settings.collection,
        contract_for(embedder),
        token=settings.milvus_secret,
        notices=FeedDeletions.from_url(settings.redis_url),  # rows it deletes reach the workers
        vector_cache=vector_cache_root(settings),
    )
    return Lookalike(settings, store, embedder)
