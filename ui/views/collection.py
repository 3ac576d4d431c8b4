"""Collection: row counts, the schema contract apps rely on, indexes, storage, the model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import streamlit as st

from services.filters import Condition, compile_filter
from services.schema import FILTERABLE_FIELDS
from ui import runtime


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _storage() -> str:
    config = runtime.settings()
    if config.milvus_uri is not None:
        return f"Milvus server at {config.milvus_uri} (storage is the server's)"
    database = config.embedded_db_file
    if not database.exists():
        return f"embedded Milvus Lite; no database at {database}"
    return f"embedded Milvus Lite, {database}: {_size_of(database) / 2**20:,.1f} MiB"


def render() -> None:
    st.title("Collection")
    with runtime.shown_errors():
        config = runtime.settings()
        collection = runtime.collection()
        store = collection.store
        rows = store.count()
        contract = store.contract
        thumbs = config.home / "thumbs"
        counts = st.columns(4)
        counts[0].metric("Images", f"{rows:,}")
        counts[1].metric("With CLIP", f"{rows:,}" if store.has_clip else "0")
        several = compile_filter([Condition("path_count", ">", 1)])
        arrived_as_copies = compile_filter([Condition("dup_of", "!=", "")])
        counts[2].metric("Stored under several paths", f"{store.count(several):,}")
        counts[3].metric("Duplicates found on arrival", f"{store.count(arrived_as_copies):,}")
        st.subheader("Where it lives")
        cached = f"{_size_of(thumbs) / 2**20:,.1f} MiB" if thumbs.exists() else "none yet"
        st.markdown(
            f"- **Collection** `{store.collection}` at `{store.uri}` ({store.profile.name})\n"
            f"- **Storage** {_storage()}\n"
            f"- **Thumbnail cache** `{thumbs}`: {cached}"
        )
        st.subheader("Model")
        if contract.clip_model is None:
            st.markdown("Hash-only collection: pHash, aHash, dHash, colorhash; no CLIP vectors.")
        else:
            loaded = collection.embedder
            st.markdown(
                f"- **Vectors of** `{contract.clip_model}`, {contract.clip_dim} dimensions, "
                f"{contract.clip_metric}\n"
                + (
                    f"- **Loaded in the UI**: `{loaded.model_id}`"
                    if loaded
                    else f"- **Not loaded in the UI**: {collection.model_note}"
                )
            )
        st.subheader("Indexes")
        profile = store.profile
        st.table(
            {
                "field": ["clip", "phash", "scalars"],
                "index": [
                    f"{profile.clip_index} {profile.clip_params or ''}".strip()
                    if store.has_clip
                    else "-",
                    f"{profile.phash_index} {profile.phash_params or ''}".strip(),
                    "INVERTED/STL_SORT" if profile.scalar_indexes else "none (Milvus Lite)",
                ],
            }
        )
        st.subheader("Schema contract")
        st.caption(
            "Stored in the collection's description; apps check it before they query "
            "(docs/schema.md)."
        )
        st.json(asdict(contract))
        st.markdown("**Filterable fields**: " + ", ".join(f"`{f}`" for f in FILTERABLE_FIELDS))


render()
