"""Clusters: the 2-D map of the CLIP vectors coloured by cluster; select a cluster, a lasso or a
box region to see its images; the least typical images in an outliers view."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from services import cluster_map
from services.cluster_map import ClusterMap
from services.clusters import cluster_collection
from services.records import ImageRecord
from ui import runtime
from ui.widgets import Tile, image_grid

SHOWN = 40  # images shown for a selection


def _map_path() -> Path:
    config = runtime.settings()
    return cluster_map.map_file(config.home, config.collection)


@st.cache_data(show_spinner=False, max_entries=4)
def _load(path: str, mtime: float) -> ClusterMap | None:
    return cluster_map.load(Path(path))


def _saved() -> tuple[ClusterMap, go.Figure] | None:
    path = _map_path()
    if not path.exists():
        return None
    key = (str(path), path.stat().st_mtime)
    saved = _load(*key)
    return None if saved is None else (saved, _figure(*key))


def _cluster_form() -> None:
    with st.form("clusters-run"):
        left, middle, right = st.columns(3)
        method = left.selectbox("Method", ["k-means, k chosen", "k-means, fixed k", "density"])
        k = middle.number_input("k (fixed k)", 2, 500, 20)
        projection = right.selectbox("Map", ["umap", "pca"], help="UMAP when installed.")
        run = st.form_submit_button("Cluster the collection")
    if not run:
        return
    collection = runtime.collection()
    bar = st.progress(0.0, text="starting")

    def advance(stage: str, fraction: float) -> None:
        bar.progress(min(max(fraction, 0.0), 1.0), text=stage)

    kind: Literal["kmeans", "density"] = "density" if method == "density" else "kmeans"
    chosen: Literal["umap", "pca"] = "umap" if projection == "umap" else "pca"
    report = cluster_collection(
        collection.store,
        k=int(k) if method == "k-means, fixed k" else None,
        method=kind,
        progress=advance,
        projection=chosen,
    )
    cluster_map.save(report, _map_path())
    bar.empty()
    st.success(f"{len(report.clusters)} clusters over {len(report.points)} images.")


@st.cache_resource(show_spinner=False, max_entries=2)
def _figure(path: str, mtime: float) -> go.Figure:
    """The map's figure, built once per saved map (rebuilding it costs more than the rest of the
    page at 10,000 points); arrays, not lists, so Plotly does not check point by point."""
    saved = _load(path, mtime)
    assert saved is not None
    labels = np.asarray(saved.cluster)
    x, y = np.asarray(saved.x), np.asarray(saved.y)
    custom = np.column_stack(
        [np.asarray(saved.ids, dtype=object), np.asarray(saved.paths, dtype=object), saved.outlier]
    )
    figure = go.Figure()
    for label in np.unique(labels).tolist():
        rows = labels == label
        figure.add_trace(
            go.Scattergl(
                x=x[rows],
                y=y[rows],
                mode="markers",
                name="noise" if label < 0 else f"cluster {label}",
                marker={"size": 6},
                customdata=custom[rows],
                hovertemplate="%{customdata[1]}<br>outlier score %{customdata[2]:.2f}"
                f"<extra>cluster {label}</extra>",
            )
        )
    figure.update_layout(height=560, margin={"l": 10, "r": 10, "t": 10, "b": 10}, dragmode="lasso")
    return figure


def _selected_ids(event: Any) -> list[str]:
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return []
    return [p["customdata"][0] for p in points if p.get("customdata")]


def _show(ids: Sequence[str], caption_of: dict[str, str]) -> None:
    rows = runtime.collection().store.get(list(ids[:SHOWN]))
    order = {i: n for n, i in enumerate(ids)}
    records: list[ImageRecord] = sorted(rows, key=lambda r: order.get(r.id, 0))
    image_grid(
        [Tile(r, caption_of.get(r.id, r.path.rsplit("/", 1)[-1])) for r in records],
        key="clusters-grid",
    )


def _explore(saved: ClusterMap, figure: go.Figure) -> None:
    stats = saved.stats
    st.caption(
        f"{len(saved)} images, {len(saved.clusters)} clusters, method {stats.get('method')}, "
        f"map {stats.get('projection')}. Lasso or box-select points to see them."
    )
    event = st.plotly_chart(
        figure,
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        key="clusters-map",
        width="stretch",
    )
    score = dict(zip(saved.ids, saved.outlier, strict=True))
    name = {i: p.rsplit("/", 1)[-1] for i, p in zip(saved.ids, saved.paths, strict=True)}
    selected = _selected_ids(event)
    view = st.radio(
        "Show", ["Selection", "A cluster", "Outliers"], horizontal=True, key="clusters-view"
    )
    if view == "Selection":
        if not selected:
            st.info("Select points on the map (lasso, box or click).")
            return
        st.markdown(
            f"**{len(selected)} selected**" + (f", first {SHOWN}" if len(selected) > SHOWN else "")
        )
        _show(selected, {i: f"{name[i]}  \noutlier {score[i]:.2f}" for i in selected})
    elif view == "A cluster":
        options = [c["id"] for c in saved.clusters]
        sizes = {c["id"]: c["size"] for c in saved.clusters}
        chosen = st.selectbox(
            "Cluster",
            options,
            format_func=lambda c: f"cluster {c} ({sizes[c]} images)",
            key="clusters-pick",
        )
        members = [i for i, c in zip(saved.ids, saved.cluster, strict=True) if c == chosen]
        members.sort(key=lambda i: score[i])  # most typical first
        st.markdown(f"**Cluster {chosen}**: {len(members)} images, most typical first")
        _show(members, {i: f"{name[i]}  \noutlier {score[i]:.2f}" for i in members})
    else:
        ranked = sorted(saved.ids, key=lambda i: -score[i])[:SHOWN]
        st.markdown(
            f"**The {len(ranked)} least typical images** (distance to their centroid, "
            "as a z-score within their cluster)"
        )
        _show(ranked, {i: f"{name[i]}  \noutlier {score[i]:.2f}" for i in ranked})


def render() -> None:
    st.title("Clusters")
    with runtime.shown_errors():
        collection = runtime.collection()
        if not collection.store.has_clip:
            st.info("Clusters need CLIP vectors; this collection is hash-only.")
            return
        saved = _saved()
        with st.expander(
            "Cluster again" if saved else "Cluster the collection", expanded=saved is None
        ):
            _cluster_form()
        saved = _saved()
        if saved is None:
            st.info("No cluster map yet: run a clustering above (or `lookalike clusters --auto`).")
            return
        _explore(*saved)


render()
