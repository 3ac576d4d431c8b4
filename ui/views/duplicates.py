"""Duplicates: every group from the dedup engine, largest first, a page at a time.

Each group shows its keeper (and why) beside its duplicates. Actions: change the keeper (it
persists), mark "not duplicates" (the group does not come back), move the duplicates to the
quarantine folder (with a manifest there for ``lookalike undo``); and the same move for every
group at once, after a confirmation.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from services.dedup import (
    DedupOptions,
    DedupReport,
    DuplicateGroup,
    Member,
    find_duplicates,
    resolve,
)
from services.filters import compile_filter
from services.keepers import DEFAULT_POLICY, parse_policy
from services.records import ImageRecord
from ui import runtime
from ui.widgets import Tile, filter_widgets, image_grid

REPORT = "dups-report"
NOTICE = "dups-notice"
CONFIRM = "dups-confirm-all"
PAGE_SIZES = (10, 25, 50)


@dataclass(frozen=True)
class Run:
    """A dedup run's report with the options it ran with and how long it took."""

    options: DedupOptions
    policy: tuple[str, ...]
    report: DedupReport
    seconds: float


def _controls() -> tuple[DedupOptions, tuple[str, ...]]:
    config = runtime.settings()
    with st.expander("Options", expanded=False):
        left, middle, right = st.columns(3)
        radius = left.slider(
            "pHash radius (flips and rotations included)",
            0,
            20,
            runtime.settings().dedup_max_hamming,
            key="dups-r",
        )
        exact_only = left.checkbox("Byte-identical files only", key="dups-exact")
        use_clip = middle.checkbox(
            "Also CLIP pairs", key="dups-use-clip", disabled=runtime.collection().embedder is None
        )
        min_cosine = middle.slider(
            "Min CLIP cosine", 0.80, 1.00, config.dup_min_cosine, 0.01, key="dups-cos"
        )
        keep = right.multiselect(
            "Keeper policy, in order",
            ["pixels", "bytes", "oldest", "format:PNG,TIFF,JPEG"],
            default=list(DEFAULT_POLICY),
            key="dups-keep",
        )
        pattern = right.text_input("Prefer paths matching (regex)", key="dups-path")
        where = compile_filter(filter_widgets("dups"))
    policy = ((f"path:{pattern}",) if pattern.strip() else ()) + tuple(keep)
    options = DedupOptions(radius, min_cosine if use_clip else None, exact_only, where)
    return options, policy


def _run(options: DedupOptions, policy: tuple[str, ...]) -> Run:
    collection = runtime.collection()
    started = time.perf_counter()
    with st.spinner("Finding duplicates…"):
        report = find_duplicates(
            collection.store, parse_policy(list(policy)), options, runtime.decisions()
        )
    return Run(options, policy, report, time.perf_counter() - started)


def _current(options: DedupOptions, policy: tuple[str, ...]) -> Run:
    """The last run if its options still hold; a new run otherwise (or after a change)."""
    run: Run | None = st.session_state.get(REPORT)
    if run is None or run.options != options or run.policy != policy:
        run = _run(options, policy)
        st.session_state[REPORT] = run
    return run


def _forget() -> None:
    st.session_state.pop(REPORT, None)


def _records(groups: list[DuplicateGroup]) -> dict[str, ImageRecord]:
    """The stored rows of every member of ``groups``, in one request."""
    ids = sorted({m.id for group in groups for m in group.members})
    return {r.id: r for r in runtime.collection().store.get(ids)}


def _tiles(group: DuplicateGroup, rows: dict[str, ImageRecord]) -> list[Tile]:
    tiles = []
    for number, member in enumerate(group.members):
        record = rows.get(member.id)
        if record is None:
            continue  # removed since the run
        shown = record if record.path == member.path else _at(record, member.path)
        label = "★ KEEP" if number == 0 else _distance(member)
        tiles.append(Tile(shown, f"**{label}**  \n{Path(member.path).name}  \n{member.reason}"))
    return tiles


def _at(record: ImageRecord, path: str) -> ImageRecord:
    return replace(record, path=path, paths=(path, *(p for p in record.all_paths if p != path)))


def _distance(member: Member) -> str:
    parts = []
    if member.hamming is not None:
        parts.append(f"ham {member.hamming}")
    if member.cosine is not None:
        parts.append(f"cos {member.cosine:.3f}")
    return " · ".join(parts) or "duplicate"


def _change_keeper(group: DuplicateGroup, key: str) -> None:
    chosen = st.session_state[key]
    if chosen != group.keeper.path:
        runtime.decisions().pin_keeper(chosen, [m.path for m in group.members])
        st.session_state[NOTICE] = f"Keeper of the group is now {chosen}."
        _forget()


def _not_duplicates(group: DuplicateGroup) -> None:
    runtime.decisions().record("not_duplicates", group.keeper.id, [m.id for m in group.duplicates])
    st.session_state[NOTICE] = f"Marked not duplicates: the group of {group.keeper.path}."
    _forget()


def _quarantine(groups: list[DuplicateGroup], folder: str) -> None:
    resolution = resolve(
        runtime.collection().store,
        groups,
        move_to=folder if "://" in folder else Path(folder),
        delete_files=False,
        decisions=runtime.decisions(),
    )
    moved = len(resolution.actions) - len(resolution.failed)
    failed = [f"{a.path}: {a.error}" for a in resolution.failed]
    undo = f" Undo: `lookalike undo {resolution.manifest}`." if resolution.manifest else ""
    st.session_state[NOTICE] = f"Moved {moved} file(s) to {folder}.{undo}" + (
        " Not moved: " + "; ".join(failed) if failed else ""
    )
    st.session_state.pop(CONFIRM, None)
    _forget()


def _group(number: int, group: DuplicateGroup, rows: dict[str, ImageRecord], folder: str) -> None:
    with st.container(border=True):
        st.markdown(
            f"**Group {number}** · {group.kind} · {len(group.members)} images · "
            f"{group.keeper.reason}"
        )
        image_grid(_tiles(group, rows), key=f"dups-g{number}")
        left, middle, right = st.columns([3, 1, 1])
        key = f"dups-keeper-{number}"
        paths = [m.path for m in group.members]
        left.selectbox(
            "Keeper",
            paths,
            index=0,
            key=key,
            on_change=_change_keeper,
            args=(group, key),
            label_visibility="collapsed",
        )
        middle.button(
            "Not duplicates", key=f"dups-not-{number}", on_click=_not_duplicates, args=(group,)
        )
        right.button(
            "Quarantine duplicates",
            key=f"dups-move-{number}",
            on_click=_quarantine,
            args=([group], folder),
        )


def _bulk(groups: list[DuplicateGroup], folder: str) -> None:
    files = sum(len(g.duplicates) for g in groups)
    if not st.session_state.get(CONFIRM):
        if st.button(f"Quarantine the duplicates of all {len(groups)} groups…", key="dups-all"):
            st.session_state[CONFIRM] = True
            st.rerun()
        return
    st.warning(f"Move {files} files into {folder}? Keepers stay where they are.")
    yes, no = st.columns(2)
    yes.button(
        f"Yes, move {files} files", key="dups-all-yes", on_click=_quarantine, args=(groups, folder)
    )
    if no.button("Cancel", key="dups-all-no"):
        st.session_state.pop(CONFIRM, None)
        st.rerun()


def render() -> None:
    st.title("Duplicates")
    notice = st.session_state.pop(NOTICE, None)
    if notice:
        st.success(notice)
    with runtime.shown_errors():
        options, policy = _controls()
        run = _current(options, policy)
        groups = run.report.groups
        stats = run.report.stats
        st.markdown(
            f"**{len(groups)} groups**, {stats.get('duplicates', 0)} duplicates "
            f"({stats.get('exact_groups', 0)} exact, {stats.get('near_groups', 0)} near) "
            f"among {stats.get('rows', 0)} images, found in {run.seconds:.1f} s"
            + (
                f"; {stats['raw_jpeg_pairs']} RAW+JPEG pair(s) of one shot left out"
                if stats.get("raw_jpeg_pairs")
                else ""
            )
        )
        if not groups:
            st.info("No duplicates with these options.")
            return
        folder = st.text_input(
            "Quarantine folder",
            str(runtime.settings().home / "quarantine"),
            key="dups-folder",
            help="Duplicates move here, keeping their relative paths; nothing is overwritten.",
        )
        head, size_col, page_col = st.columns([3, 1, 1])
        size = size_col.selectbox("Groups per page", PAGE_SIZES, key="dups-size")
        pages = max(1, math.ceil(len(groups) / size))
        page = page_col.number_input(f"Page (of {pages})", 1, pages, 1, key="dups-page")
        with head:
            _bulk(groups, folder)
            st.button("Refresh", key="dups-refresh", on_click=_forget)
        first = (int(page) - 1) * size
        shown = groups[first : first + size]
        rows = _records(shown)
        for number, group in enumerate(shown, start=first + 1):
            _group(number, group, rows, folder)


render()
