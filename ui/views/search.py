"""Search: by an uploaded image, by text, or by a stored image ("more like this")."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from services.decode import load_image_bytes
from services.records import ImageRecord
from services.search import SearchHit, SearchQuery, SearchResult, search
from ui import runtime
from ui.widgets import Tile, filter_widgets, image_grid

MODES = ("Upload an image", "Text", "Stored image")
MORE_LIKE = "search-more-like"


def _more_like_this(record: ImageRecord) -> None:
    st.session_state[MORE_LIKE] = record.id
    st.session_state["search-mode"] = "Stored image"
    st.session_state["search-id"] = record.id


def _caption(hit: SearchHit) -> str:
    record = hit.record
    parts = []
    if hit.cosine is not None:
        parts.append(f"cos {hit.cosine:.3f}")
    if hit.hamming is not None:
        parts.append(f"ham {hit.hamming}")
    if hit.patches:
        parts.append(f"{hit.patches} patches")
    parts.append(f"{record.width}x{record.height}")
    return " · ".join(parts) + f"  \n{record.path.rsplit('/', 1)[-1]}"


def _query() -> SearchQuery | None:
    config = runtime.settings()
    collection = runtime.collection()
    mode = st.radio("Query by", MODES, horizontal=True, key="search-mode")
    left, middle, right = st.columns([2, 2, 1])
    use_hamming = left.toggle(
        "Hamming pre-filter on pHash",
        value=True,
        key="search-use-hamming",
        help="Off: nearest neighbours by CLIP cosine alone.",
        disabled=mode == "Text",
    )
    radius = middle.slider(
        "Hamming radius",
        0,
        32,
        runtime.settings().search_max_hamming,
        key="search-radius",
        disabled=not use_hamming,
    )
    top_k = right.number_input("Top k", 1, 200, 20, key="search-top-k")
    where = tuple(filter_widgets("search"))
    max_hamming = radius if use_hamming and mode != "Text" else None
    base = SearchQuery(where=where, max_hamming=max_hamming, top_k=int(top_k))
    if mode == "Upload an image":
        upload = st.file_uploader(
            "Image", type=None, key="search-upload", help="Any image format lookalike reads."
        )
        if upload is None:
            return None
        loaded = load_image_bytes(
            upload.getvalue(), upload.name, max_pixels=config.max_image_pixels
        )
        st.image(runtime.thumbnails().of_image(loaded.image), caption="query", width=160)
        return replace(base, image=loaded.image)
    if mode == "Text":
        if collection.embedder is None:
            st.info(f"Text search needs CLIP: {collection.model_note}.")
            return None
        text = st.text_input("Describe the image", key="search-text")
        return replace(base, text=text.strip()) if text.strip() else None
    content_id = st.text_input("Stored image id (sha256)", key="search-id").strip()
    return replace(base, id=content_id) if content_id else None


def _show(result: SearchResult) -> None:
    stages = ", ".join(f"{name[:-3]} {ms:.0f} ms" for name, ms in result.stage_ms.items())
    st.markdown(
        f"**{len(result.hits)} results** in {result.elapsed_ms:.0f} ms "
        f"({result.mode}; {result.candidates} candidates{'; ' + stages if stages else ''})"
    )
    if result.truncated:
        st.warning("The Hamming stage hit its candidate limit: lower the radius or filter more.")
    tiles = [Tile(h.record, _caption(h)) for h in result.hits]
    image_grid(tiles, key="search-hit", action=("More like this", _more_like_this))


def render() -> None:
    st.title("Search")
    with runtime.shown_errors():
        collection = runtime.collection()
        if collection.embedder is None:
            st.caption(f"Hash-only search: {collection.model_note}.")
        query = _query()
        if query is None:
            st.caption("Upload an image, type a text, or pick “More like this” on a result.")
            return
        patches = runtime.patch_search(collection.store)
        result = search(collection.store, collection.embedder, query, patches=patches)
    _show(result)


render()
