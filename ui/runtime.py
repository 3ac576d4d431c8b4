"""What every page shares: settings read once, the connections, errors shown as messages.

Streamlit re-runs a page's script on every interaction, so anything expensive (the Milvus client,
the CLIP model, the Redis ledger) is a cached resource, created once per server process. Settings
are read from the environment once, here, at the edge.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from services.app import vector_cache_root
from services.arrival_index import ArrivalCodes, ArrivalIndex
from services.code_feed import FeedDeletions, RedisCodeFeed
from services.code_index import CodeHit
from services.decisions import RedisDecisions
from services.embed import Embedder, create_embedder
from services.errors import LedgerUnavailableError, LookalikeError, ModelError, StoreError
from services.kept_dedup import RedisKeptResults
from services.ledger import JobLedger
from services.patches import PatchCodes, patch_radius
from services.schema import SchemaContract
from services.search import PatchSearch
from services.settings import Settings
from services.store import MilvusStore, stored_contract
from ui.thumbs import Thumbnails

log = logging.getLogger(__name__)


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    """The UI server's settings, read from the environment once."""
    return Settings.from_env()


@dataclass(frozen=True)
class Collection:
    """The open collection and the model whose vectors it holds (None: hash-only)."""

    store: MilvusStore
    embedder: Embedder | None
    model_note: str  # why there is no embedder, when there is none


@st.cache_resource(show_spinner="Connecting to Milvus…")
def _store(
    uri: str, collection: str, token: str | None, redis_url: str, vector_cache: Path | None
) -> MilvusStore:
    contract = stored_contract(uri, collection, token=token)
    if contract is None:
        raise StoreError(
            f"no collection {collection!r} at {uri} yet: ingest images first "
            "(the Ingest page, or `lookalike ingest FOLDER`)"
        )
    notices = FeedDeletions.from_url(redis_url)  # quarantine tells the workers what it deleted
    return MilvusStore.connect(
        uri, collection, contract, token=token, notices=notices, vector_cache=vector_cache
    )


@st.cache_resource(show_spinner="Loading the CLIP model…")
def _embedder(model: str) -> Embedder | None:
    return create_embedder(settings())


def collection() -> Collection:
    """The configured collection, opened once per UI server (a StoreError when absent)."""
    config = settings()
    store = _store(
        config.effective_milvus_uri,
        config.collection,
        config.milvus_secret,
        config.redis_url,
        vector_cache_root(config),
    )
    return Collection(store, *_model_for(config, store.contract))


class _SharedPatches:
    """The stored rows' patch codes for the search page: one index per UI server, loaded from
    Milvus at its first search and kept current through the code feed (as a worker's), shared
    by the sessions' threads one at a time. Without Redis the search goes on without it."""

    def __init__(self, index: ArrivalIndex) -> None:
        self._index = index
        self._lock = threading.Lock()

    def agreeing(self, codes: PatchCodes) -> Sequence[CodeHit]:
        with self._lock:
            try:
                return self._index.agreeing(codes)
            except LedgerUnavailableError as exc:
                log.warning("search without the patch codes: %s", exc)
                return []


@st.cache_resource(show_spinner="Loading the stored patch codes…")
def _patches(
    collection: str, instance: str, redis_url: str, radius: int, _store: MilvusStore
) -> _SharedPatches:
    feed = RedisCodeFeed.from_url(redis_url, collection, instance)
    return _SharedPatches(ArrivalIndex(_store, feed, ArrivalCodes((), patch_radius=radius)))


def patch_search(store: MilvusStore) -> PatchSearch | None:
    """The index of ``store``'s patch codes the search page matches (None when
    ``LOOKALIKE_SEARCH_PATCHES`` is off)."""
    config = settings()
    if not config.search_patches:
        return None
    radius = patch_radius(config.dedup_max_hamming)
    return _patches(store.collection, store.instance, config.redis_url, radius, store)


def _model_for(config: Settings, contract: SchemaContract) -> tuple[Embedder | None, str]:
    if contract.clip_model is None:
        return None, "this collection is hash-only (no CLIP vectors)"
    if config.hash_only:
        return None, "LOOKALIKE_CLIP_MODEL=none: the UI runs without CLIP"
    try:
        embedder = _embedder(config.clip_model)
    except ModelError as exc:
        return None, f"CLIP is not available: {exc}"
    if embedder is None or embedder.model_id != contract.clip_model:
        loaded = embedder.model_id if embedder else "none"
        return None, (
            f"the collection holds vectors of {contract.clip_model}, the UI loaded {loaded}; "
            "set LOOKALIKE_CLIP_MODEL to the collection's model"
        )
    return embedder, ""


@st.cache_resource(show_spinner=False)
def ledger() -> JobLedger:
    return JobLedger.from_url(settings().redis_url)


@st.cache_resource(show_spinner=False)
def decisions() -> RedisDecisions:
    config = settings()
    return RedisDecisions.from_url(config.redis_url, config.collection)


@st.cache_resource(show_spinner=False)
def kept_results() -> RedisKeptResults:
    """Where the last dedup result is kept (Redis: every UI replica and the CLI share it)."""
    config = settings()
    return RedisKeptResults.from_url(config.redis_url, config.collection)


@st.cache_resource(show_spinner=False)
def thumbnails() -> Thumbnails:
    config = settings()
    return Thumbnails(config.home / "thumbs", max_pixels=config.max_image_pixels)


@contextmanager
def shown_errors() -> Iterator[None]:
    """Show lookalike's errors (Milvus or Redis down, a bad filter…) as a message, not a
    traceback, and stop the page there; anything unexpected is logged and shown briefly."""
    try:
        yield
    except LookalikeError as exc:
        st.error(str(exc), icon=":material/error:")
        st.stop()
    except Exception as exc:  # Streamlit's st.stop/st.rerun are BaseExceptions: not caught
        log.exception("unexpected error in the UI")
        st.error(f"Unexpected error ({type(exc).__name__}): {exc}", icon=":material/error:")
        st.stop()
