"""The Duplicates page shows the kept dedup result at once and recomputes only on demand: AppTest
and a real browser against the real stack (Milvus Lite, Redis, ``lookalike ui``)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from streamlit.testing.v1 import AppTest

from services.dedup import DedupOptions, DuplicateGroup, find_duplicates
from services.keepers import parse_policy
from services.kept_dedup import KeptResult, RedisKeptResults
from services.store import MilvusStore
from tests.ui.conftest import UiStack, running_ui

pytestmark = pytest.mark.integration
EXACT_ONLY = DedupOptions(exact_only=True)


def keep_exact_only(ui_stack: UiStack, instance: str | None = None) -> KeptResult:
    """Keep a byte-identical-only result, as ``lookalike dedup --exact-only`` does: not what
    the page would compute with its defaults, so a page showing it did not recompute."""
    store = ui_stack.store()
    try:
        report = find_duplicates(store, parse_policy([]), EXACT_ONLY)
        result = KeptResult.of(
            report,
            collection=store.collection,
            instance=instance or store.instance,
            options=EXACT_ONLY,
            policy=[],
            seconds=0.5,
            origin="cli",
        )
    finally:
        store.close()
    kept(ui_stack).save(result)
    return result


def kept(ui_stack: UiStack) -> RedisKeptResults:
    return RedisKeptResults.from_url(ui_stack.redis_url, ui_stack.collection)


def summary(app: AppTest) -> str:
    return next(m.value for m in app.markdown if "groups**" in m.value)


def test_the_kept_result_shows_without_a_recompute(ui_stack: UiStack) -> None:
    result = keep_exact_only(ui_stack)
    app = ui_stack.app("duplicates")  # a fresh server process: nothing decoded yet
    assert not app.exception
    assert summary(app).startswith("**6 groups**, 6 duplicates (6 exact, 0 near)")
    captions = [c.value for c in app.caption]
    assert any("by `lookalike dedup`" in c and "byte-identical only" in c for c in captions)
    assert any("differ from the kept result's" in c for c in captions)
    assert app.button(key="dups-recompute").label == "Recompute"
    app.run()  # a re-render reads the same result, and writes none
    meta = kept(ui_stack).meta(ui_stack.store().instance)
    assert meta is not None and meta["run"] == result.run

    recomputed = app.button(key="dups-recompute").click().run()
    assert not recomputed.exception
    assert summary(recomputed).startswith("**12 groups**, 42 duplicates (6 exact, 6 near)")
    assert any("Found 12 groups" in s.value for s in recomputed.success)
    meta = kept(ui_stack).meta(ui_stack.store().instance)
    assert meta is not None and meta["run"] != result.run and meta["origin"] == "ui"
    again = ui_stack.app("duplicates")  # another process sees the page's result
    assert summary(again).startswith("**12 groups**")
    assert any("by the Duplicates page" in c.value for c in again.caption)


def test_no_result_or_one_of_another_instance_is_a_prompt(ui_stack: UiStack) -> None:
    kept(ui_stack).forget()
    app = ui_stack.app("duplicates")
    assert any("No dedup result is kept" in i.value for i in app.info)
    assert app.button(key="dups-recompute").label == "Find duplicates"
    keep_exact_only(ui_stack, instance="a-collection-dropped-since")
    app = ui_stack.app("duplicates")
    assert any("No dedup result is kept" in i.value for i in app.info)


@pytest.fixture
def one_duplicate_gone(ui_stack: UiStack) -> Iterator[tuple[DuplicateGroup, MilvusStore]]:
    """A near group of the kept result with one duplicate's row deleted since (put back
    afterwards)."""
    store = ui_stack.store()
    report = find_duplicates(store, parse_policy([]), DedupOptions())
    kept(ui_stack).save(
        KeptResult.of(
            report,
            collection=store.collection,
            instance=store.instance,
            options=DedupOptions(),
            policy=[],
            seconds=1.0,
            origin="cli",
        )
    )
    group = report.groups[0]
    gone = group.duplicates[0]
    [row] = store.get([gone.id], with_vectors=True)
    store.delete([gone.id])
    try:
        yield group, store
    finally:
        store.upsert([row])
        store.close()


def test_members_gone_since_the_run_are_left_out(
    ui_stack: UiStack, one_duplicate_gone: tuple[DuplicateGroup, MilvusStore]
) -> None:
    group, _ = one_duplicate_gone
    app = ui_stack.app("duplicates")
    assert not app.exception
    header = next(m.value for m in app.markdown if m.value.startswith("**Group 1**"))
    assert f"{len(group.members) - 1} images" in header and "1 gone since the run" in header
    keeper_box = app.selectbox(key="dups-keeper-1")
    assert group.duplicates[0].path not in keeper_box.options
    assert len(keeper_box.options) == len(group.members) - 1


@pytest.mark.slow
@pytest.mark.browser
def test_browser_shows_the_kept_result_and_recomputes(
    ui_stack: UiStack, browser: object, tmp_path_factory: pytest.TempPathFactory
) -> None:
    result = keep_exact_only(ui_stack)
    # No Milvus call from this process while the browser runs: milvus-lite idle-closes a
    # channel left waiting ("too many pings"; see tests.conftest.drop_when_reachable).
    instance = result.instance
    with running_ui({}, tmp_path_factory.mktemp("ui-log") / "ui.log") as (url, _):
        page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
        page.set_default_timeout(60_000)
        page.goto(f"{url}/duplicates")
        page.get_by_text(re.compile(r"^6 groups, 6 duplicates \(6 exact, 0 near\)")).wait_for()
        page.get_by_text("by lookalike dedup", exact=False).first.wait_for()
        meta = kept(ui_stack).meta(instance)
        assert meta is not None and meta["run"] == result.run  # shown, not recomputed

        page.get_by_role("button", name="Recompute").click()
        page.get_by_text(re.compile(r"^12 groups, 42 duplicates \(6 exact, 6 near\)")).wait_for()
        page.get_by_text("by the Duplicates page", exact=False).first.wait_for()
        page.get_by_text("★ KEEP").nth(9).wait_for()
        deadline = time.monotonic() + 10
        while (meta := kept(ui_stack).meta(instance)) and meta["run"] == result.run:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert meta is not None and meta["origin"] == "ui"
        page.close()
