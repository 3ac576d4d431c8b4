"""The Duplicates page's file actions (a module of its own: they move the stack's photos)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ui.conftest import UiStack
from tests.ui.test_pages import captions, recomputed, summary

pytestmark = pytest.mark.integration


def groups_count(text: str) -> int:
    return int(text.split("**")[1].split()[0])


def test_quarantine_one_group_then_all_after_confirmation(
    ui_stack: UiStack, tmp_path: Path
) -> None:
    quarantine = tmp_path / "quarantine"
    app = recomputed(ui_stack.app("duplicates"))
    app.text_input(key="dups-folder").input(str(quarantine)).run()
    before = groups_count(summary(app, "groups"))
    grid = [c for c in captions(app) if "\n" in c]  # the grid's captions, not the page's
    keeper = Path(grid[0].split("\n")[1].strip()).name
    # The largest group: an original and its 6 near copies (the crop through the frame codes).
    duplicates = [c.split("\n")[1].strip() for c in grid[1:7]]

    app.button(key="dups-move-1").click().run()
    assert not app.exception
    assert app.success[0].value.startswith("Moved 6 file(s)")
    [manifest] = quarantine.glob(".lookalike-manifest-*.jsonl")  # what `lookalike undo` reads
    assert f"lookalike undo {manifest}" in app.success[0].value
    moved = sorted(p.name for p in quarantine.rglob("*") if p.is_file() and p != manifest)
    assert moved == sorted(duplicates)
    assert len(manifest.read_text().splitlines()) == 1 + 6  # the header, one line per file
    assert (ui_stack.photos / "originals").joinpath(keeper).exists()  # keepers stay
    assert groups_count(summary(app, "groups")) == before - 1

    # Bulk: the first click only asks; nothing moves before "Yes".
    app.text_input(key="dups-folder").input(str(quarantine)).run()
    files_before = len(list(quarantine.rglob("*")))
    app.button(key="dups-all").click().run()
    assert "Keepers stay where they are" in app.warning[0].value
    assert len(list(quarantine.rglob("*"))) == files_before
    app.button(key="dups-all-no").click().run()
    assert not app.warning
    app.button(key="dups-all").click().run()
    app.button(key="dups-all-yes").click().run()
    assert not app.exception
    assert "Moved" in app.success[0].value
    # The kept result marks what moved since it ran; a recompute finds nothing left.
    app = recomputed(app)
    assert any(i.value == "No duplicates with these options." for i in app.info), [
        i.value for i in app.info
    ]
    rows = list(ui_stack.store().iterate())
    assert all(not str(Path(r.path)).startswith(str(quarantine)) for r in rows)
