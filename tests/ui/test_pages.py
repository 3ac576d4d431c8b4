"""Every page of the UI through streamlit.testing's AppTest, against the real stack."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import free_port
from tests.ui.conftest import UiStack

pytestmark = pytest.mark.integration


def captions(app: AppTest) -> list[str]:
    return [c.value for c in app.caption]


def names_shown(app: AppTest) -> list[str]:
    """File names in the captions of the image grid (the second line of each caption)."""
    return [c.split("\n")[1].strip() for c in captions(app) if c.count("\n") >= 1]


def summary(app: AppTest, word: str) -> str:
    return next(m.value for m in app.markdown if word in m.value)


@pytest.fixture
def environment(ui_stack: UiStack) -> Iterator[dict[str, str]]:
    """os.environ for one test's changes (the UI reads its settings from it)."""
    saved = dict(os.environ)
    yield os.environ  # type: ignore[misc]
    os.environ.clear()
    os.environ.update(saved)


def test_search_by_stored_image_finds_copies_flipped_and_rotated(ui_stack: UiStack) -> None:
    app = ui_stack.app()
    [original] = list(ui_stack.store().iterate('path like "%originals/astronaut%"'))
    app.radio(key="search-mode").set_value("Stored image").run()
    app.text_input(key="search-id").input(original.id).run()
    assert not app.exception
    # The five whole-frame copies, and the 17% centred crop through the frame codes.
    assert summary(app, "results").startswith("**6 results**")
    shown = names_shown(app)
    for copy in ("mirrored", "rotated", "resized", "recompressed", "tinted", "cropped"):
        assert f"astronaut_{copy}.jpg" in shown
    assert "astronaut.png" not in shown  # the query itself is left out


def test_more_like_this_searches_from_a_result(ui_stack: UiStack) -> None:
    app = ui_stack.app()
    [original] = list(ui_stack.store().iterate('path like "%originals/chelsea%"'))
    app.radio(key="search-mode").set_value("Stored image").run()
    app.text_input(key="search-id").input(original.id).run()
    first = next(b for b in app.button if b.label == "More like this")
    first.click().run()
    assert not app.exception
    assert app.text_input(key="search-id").value != original.id
    assert "chelsea.png" in names_shown(app)  # now the original is a result of its copy


def test_text_search_returns_top_k(ui_stack: UiStack) -> None:
    app = ui_stack.app()
    app.radio(key="search-mode").set_value("Text").run()
    app.number_input(key="search-top-k").set_value(7).run()
    app.text_input(key="search-text").input("an astronaut").run()
    assert not app.exception
    assert summary(app, "results").startswith("**7 results**")
    assert "(text;" in summary(app, "results")


def test_metadata_filter_narrows_and_a_bad_one_is_a_message(ui_stack: UiStack) -> None:
    app = ui_stack.app()
    [original] = list(ui_stack.store().iterate('path like "%originals/astronaut%"'))
    app.radio(key="search-mode").set_value("Stored image").run()
    app.text_input(key="search-id").input(original.id).run()
    app.text_area(key="search-where").input("width < 300").run()
    assert summary(app, "results").startswith("**1 results**")
    assert names_shown(app) == ["astronaut_resized.jpg"]
    app.text_area(key="search-where").input("colour = red").run()
    assert not app.exception
    assert "unknown filter field 'colour'" in app.error[0].value


def test_milvus_down_is_a_message_not_a_traceback(
    ui_stack: UiStack, environment: dict[str, str]
) -> None:
    environment["LOOKALIKE_MILVUS_URI"] = f"http://127.0.0.1:{free_port()}"
    for page in (None, "duplicates", "clusters", "collection"):
        app = ui_stack.app(page)
        assert not app.exception, page
        assert "is unreachable" in app.error[0].value, page


def test_redis_down_is_a_message_on_the_ingest_page(
    ui_stack: UiStack, environment: dict[str, str]
) -> None:
    environment["LOOKALIKE_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app = ui_stack.app("ingest")
    assert not app.exception
    assert "Redis" in app.error[0].value


def test_password_gate(ui_stack: UiStack, environment: dict[str, str]) -> None:
    environment["LOOKALIKE_UI_PASSWORD"] = "open sesame"
    app = ui_stack.app()
    assert [t.value for t in app.title] == ["lookalike"]  # nothing of the pages
    app.text_input(key="auth-password").input("guess")
    app.button[0].click().run()
    assert app.error[0].value == "Wrong password."
    assert [t.value for t in app.title] == ["lookalike"]
    app.text_input(key="auth-password").input("open sesame")
    app.button[0].click().run()
    assert [t.value for t in app.title] == ["Search"]


def recomputed(app: AppTest) -> AppTest:
    """The Duplicates page after its Recompute (or Find duplicates) button."""
    app.button(key="dups-recompute").click().run()
    assert not app.exception
    return app


def test_duplicates_page_lists_groups_with_keeper_and_reason(ui_stack: UiStack) -> None:
    app = recomputed(ui_stack.app("duplicates"))
    stats = summary(app, "groups")
    # 6 originals, each with 6 near copies (the 17% centred crop through the frame codes), and
    # 6 byte-identical copies.
    assert stats.startswith("**12 groups**, 42 duplicates (6 exact, 6 near) among")
    first = [c for c in captions(app) if "\n" in c][:6]  # the grid's, not the page's
    assert first[0].startswith("**★ KEEP**") and "kept: largest file" in first[0]
    assert all("pHash distance" in c for c in first[1:])


def test_not_duplicates_and_keeper_changes_persist(ui_stack: UiStack) -> None:
    app = recomputed(ui_stack.app("duplicates"))
    header = next(m.value for m in app.markdown if m.value.startswith("**Group 1**"))
    keeper_box = app.selectbox(key="dups-keeper-1")
    keeper, other = keeper_box.options[0], keeper_box.options[1]
    keeper_box.set_value(other).run()
    assert not app.exception
    assert f"Keeper of the group is now {other}" in app.success[0].value
    again = ui_stack.app("duplicates")  # a new session: the choice was persisted
    group = [c for c in captions(again) if "★ KEEP" in c]
    assert any(Path(other).name in c and "chosen by an analyst" in c for c in group)
    assert header  # the group existed before

    groups_before = int(summary(again, "groups").split("**")[1].split()[0])
    again.button(key="dups-not-1").click().run()
    assert "Marked not duplicates" in again.success[0].value
    fresh = ui_stack.app("duplicates")
    assert int(summary(fresh, "groups").split("**")[1].split()[0]) == groups_before - 1
    assert keeper  # the original keeper is now a member of a suppressed group


def test_collection_page_shows_contract_counts_and_model(ui_stack: UiStack) -> None:
    app = ui_stack.app("collection")
    assert not app.exception
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Images"] == str(len(list(ui_stack.photos.rglob("*.*"))) - 6)
    assert metrics["Stored under several paths"] == "6"
    contract = app.json[0].value
    assert '"schema_version"' in contract and '"clip_dim": 32' in contract
    assert any("Loaded in the UI" in m.value for m in app.markdown)


def test_clusters_page_clusters_writes_back_and_explores(ui_stack: UiStack) -> None:
    app = ui_stack.app("clusters")
    assert not app.exception
    assert any("No cluster map yet" in i.value for i in app.info)
    next(s for s in app.selectbox if s.label == "Method").set_value("k-means, fixed k")
    next(n for n in app.number_input if n.label == "k (fixed k)").set_value(6)
    next(s for s in app.selectbox if s.label == "Map").set_value("pca")
    next(b for b in app.button if b.label == "Cluster the collection").click().run(timeout=300)
    assert not app.exception
    rows = list(ui_stack.store().iterate())
    assert app.success[0].value == f"6 clusters over {len(rows)} images."
    assert {r.cluster for r in rows} == set(range(6))  # written back to Milvus
    assert len(app.get("plotly_chart")) == 1

    app = ui_stack.app("clusters")  # a new session opens the saved map
    app.radio(key="clusters-view").set_value("A cluster").run()
    chosen = app.selectbox(key="clusters-pick")
    cluster = chosen.options[0]
    size = sum(1 for r in rows if r.cluster == int(cluster.split()[1]))
    shown = summary(app, "most typical first")
    assert f"{size} images" in shown
    assert len([c for c in captions(app) if "outlier" in c]) == min(size, 40)

    app.radio(key="clusters-view").set_value("Outliers").run()
    assert "least typical" in summary(app, "least typical")
    scores = [float(c.rsplit("outlier ", 1)[1]) for c in captions(app) if "outlier" in c]
    assert scores == sorted(scores, reverse=True) and len(scores) == min(len(rows), 40)
