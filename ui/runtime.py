"""What every page shares: settings read once, the connections, errors shown as messages.

Streamlit re-runs a page's script on every interaction, so anything expensive (the Milvus client,
the CLIP model, the Redis ledger) is a cached resource, created once per server process. Settings
are read from the environment once, here, at the edge.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from services.app import vector_cache_root
from services.code_feed import FeedDeletions
from services.decisions import RedisDecisions
from services.embed import Embedder, create_embedder
from services.errors import LookalikeError, ModelError, StoreError
from services.kept_dedup import RedisKeptResults
from services.ledger import JobLedger
from services.schema import SchemaContract
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
