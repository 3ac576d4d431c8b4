"""Duplicates: the kept dedup result's groups, largest first, a page at a time.

The page shows the last dedup result kept in Redis (:mod:`services.kept_dedup`; the page's
Recompute button and ``lookalike dedup`` write it), so a render never runs the dedup: it reads
the result's small meta, decodes the groups once per result and process, applies the decisions
recorded since (a decided group disappears, a pinned keeper shows as the keeper) and checks that
the members of the groups on screen still exist. Recompute runs the dedup with the options above,
with a progress bar, and keeps its result for every process of the deployment.

Each group shows its keeper (and why) beside its duplicates. Actions: change the keeper (it
persists), mark "not duplicates" (the group does not come back), move the duplicates to the
quarantine folder (with a manifest there for ``lookalike undo``); and the same move for every
group at once, after a confirmation.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import streamlit as st

from services.dedup import (
    DedupOptions,
    DuplicateGroup,
    Member,
    find_duplicates,
    resolve,
)
from services.filters import compile_filter
from services.keepers import DEFAULT_POLICY, parse_policy
from services.kept_dedup import DecidedView, KeptResult
from services.records import ImageRecord
from ui import runtime
from ui.widgets import Tile, filter_widgets, image_grid

NOTICE = "dups-notice"
CONFIRM = "dups-confirm-all"
PAGE_SIZES = (10, 25, 50)
ORIGINS = {"ui": "the Duplicates page", "cli": "`lookalike dedup`"}


def _controls() -> tuple[DedupOptions, tuple[str, ...]]:
    config = runtime.settings()
    with st.expander("Options (for the next Recompute)", expanded=False):
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


def _recompute(options: DedupOptions, policy: tuple[str, ...]) -> None:
    """Run the dedup with a progress bar and keep its result for every process."""
    store = runtime.collection().store
    bar = st.progress(0.0, text="Finding duplicates…")

    def progress(done: float, stage: str) -> None:
        bar.progress(min(1.0, done), text=stage)

    started = time.perf_counter()
    report = find_duplicates(
        store, parse_policy(list(policy)), options, runtime.decisions(), progress=progress
    )
    seconds = time.perf_counter() - started
    result = KeptResult.of(
        report,
        collection=store.collection,
        instance=store.instance,
        options=options,
        policy=policy,
        seconds=seconds,
        origin="ui",
    )
    runtime.kept_results().save(result)
    bar.empty()
    st.session_state[NOTICE] = f"Found {len(report.groups)} groups in {seconds:.1f} s."


@st.cache_resource(max_entries=4, show_spinner="Reading the kept dedup result…")
def _kept(collection: str, instance: str, run: str) -> KeptResult | None:
    """The kept result ``run``, decoded once per UI process (shared by its sessions)."""
    return runtime.kept_results().load(instance)


@st.cache_resource(max_entries=4, show_spinner=False)
def _view(collection: str, instance: str, run: str, decisions: int) -> DecidedView | None:
    """The kept result with the decisions applied, while ``decisions`` (their count) holds."""
    result = _kept(collection, instance, run)
    if result is None:
        return None
    recorded = runtime.decisions()
    return result.decided(recorded.suppressed_pairs(), recorded.pinned_keepers())


def _describe(result: KeptResult) -> str:
    options = result.options
    when = datetime.fromtimestamp(result.computed_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"pHash radius {options.max_hamming}",
        "byte-identical only" if options.exact_only else "",
        "CLIP off" if options.min_cosine is None else f"CLIP cosine >= {options.min_cosine:.2f}",
        f"filter `{options.where}`" if options.where else "no filter",
        "keeper policy " + ", ".join(result.policy or DEFAULT_POLICY),
    ]
    return (
        f"Kept result of {when}, by {ORIGINS[result.origin]}: "
        + "; ".join(p for p in parts if p)
        + ". Decisions recorded since apply at once."
    )


def _records(groups: list[DuplicateGroup]) -> dict[str, ImageRecord]:
    """The stored rows of every member of ``groups``, in one request."""
    ids = sorted({m.id for group in groups for m in group.members})
    return {r.id: r for r in runtime.collection().store.get(ids)}


def _live(group: DuplicateGroup, rows: dict[str, ImageRecord]) -> DuplicateGroup | None:
    """``group`` without the members deleted or moved since the run (their row is gone, or no
    longer lists their path); None when its keeper or every duplicate is gone."""

    def there(member: Member) -> bool:
        record = rows.get(member.id)
        return record is not None and member.path in record.all_paths

    duplicates = [m for m in group.duplicates if there(m)]
    if not there(group.keeper) or not duplicates:
        return None
    return DuplicateGroup(group.kind, group.keeper, duplicates)


def _tiles(group: DuplicateGroup, rows: dict[str, ImageRecord]) -> list[Tile]:
    tiles = []
    for number, member in enumerate(group.members):
        record = rows[member.id]
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


def _not_duplicates(group: DuplicateGroup) -> None:
    runtime.decisions().record("not_duplicates", group.keeper.id, [m.id for m in group.duplicates])
    st.session_state[NOTICE] = f"Marked not duplicates: the group of {group.keeper.path}."


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


def _quarantine_all(view: DecidedView, folder: str) -> None:
    _quarantine(view.groups(), folder)


def _group(number: int, group: DuplicateGroup, rows: dict[str, ImageRecord], folder: str) -> None:
    live = _live(group, rows)
    if live is None:
        st.info(
            f"Group {number} changed since the dedup ran: its keeper or every duplicate was "
            "deleted or moved. Recompute to refresh the groups.",
            icon=":material/history:",
        )
        return
    gone = len(group.members) - len(live.members)
    with st.container(border=True):
        st.markdown(
            f"**Group {number}** · {live.kind} · {len(live.members)} images · "
            f"{live.keeper.reason}" + (f" · {gone} gone since the run" if gone else "")
        )
        image_grid(_tiles(live, rows), key=f"dups-g{number}")
        left, middle, right = st.columns([3, 1, 1])
        key = f"dups-keeper-{number}"
        paths = [m.path for m in live.members]
        left.selectbox(
            "Keeper",
            paths,
            index=0,
            key=key,
            on_change=_change_keeper,
            args=(live, key),
            label_visibility="collapsed",
        )
        middle.button(
            "Not duplicates", key=f"dups-not-{number}", on_click=_not_duplicates, args=(live,)
        )
        right.button(
            "Quarantine duplicates",
            key=f"dups-move-{number}",
            on_click=_quarantine,
            args=([live], folder),
        )


def _bulk(view: DecidedView, files: int, folder: str) -> None:
    if not st.session_state.get(CONFIRM):
        if st.button(f"Quarantine the duplicates of all {len(view)} groups…", key="dups-all"):
            st.session_state[CONFIRM] = True
            st.rerun()
        return
    st.warning(f"Move {files} files into {folder}? Keepers stay where they are.")
    yes, no = st.columns(2)
    yes.button(
        f"Yes, move {files} files",
        key="dups-all-yes",
        on_click=_quarantine_all,
        args=(view, folder),
    )
    if no.button("Cancel", key="dups-all-no"):
        st.session_state.pop(CONFIRM, None)
        st.rerun()


def _summary(result: KeptResult, counts: dict[str, int]) -> str:
    stats = result.stats
    return (
        f"**{counts['groups']} groups**, {counts['duplicates']} duplicates "
        f"({counts['exact_groups']} exact, {counts['near_groups']} near) "
        f"among {stats.get('rows', 0)} images, found in {result.seconds:.1f} s"
        + (
            f"; {stats['raw_jpeg_pairs']} RAW+JPEG pair(s) of one shot left out"
            if stats.get("raw_jpeg_pairs")
            else ""
        )
    )


def render() -> None:
    st.title("Duplicates")
    with runtime.shown_errors():
        options, policy = _controls()
        store = runtime.collection().store
        kept = runtime.kept_results().meta(store.instance)
        label = "Recompute" if kept else "Find duplicates"
        if st.button(label, key="dups-recompute", type="primary"):
            _recompute(options, policy)
            kept = runtime.kept_results().meta(store.instance)
        notice = st.session_state.pop(NOTICE, None)
        if notice:
            st.success(notice)
        if kept is None:
            st.info(
                "No dedup result is kept for this collection yet: press Find duplicates, or run "
                "`lookalike dedup`. The result is kept, so later visits show it at once."
            )
            return
        run = str(kept["run"])
        result = _kept(store.collection, store.instance, run)
        view = _view(store.collection, store.instance, run, runtime.decisions().version())
        if result is None or view is None:
            st.info("The kept dedup result was just replaced or removed: reload the page.")
            return
        counts = view.counts()
        st.markdown(_summary(result, counts))
        st.caption(_describe(result))
        if (options, policy or DEFAULT_POLICY) != (result.options, result.policy or DEFAULT_POLICY):
            st.caption("The options above differ from the kept result's: Recompute applies them.")
        if not len(view):
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
        pages = max(1, math.ceil(len(view) / size))
        page = page_col.number_input(f"Page (of {pages})", 1, pages, 1, key="dups-page")
        with head:
            _bulk(view, counts["duplicates"], folder)
        first = (int(page) - 1) * size
        shown = view.groups(first, first + size)
        rows = _records(shown)
        for number, group in enumerate(shown, start=first + 1):
            _group(number, group, rows, folder)


render()
