"""The running UI in a real browser: Debian's headless Chromium driven by Playwright.

``lookalike ui`` runs as its own process against the test stack; the browser searches by an
uploaded image and by text, opens the duplicates and a cluster, and saves a screenshot of every
page (into ``UI_SCREENSHOTS`` when set, e.g. ``docs/img`` for the README; a temporary folder
otherwise). No browser is downloaded: the project's set-up installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from services import cluster_map
from services.clusters import cluster_collection
from testkit.imagegen import off_centre_cut
from tests.ui.conftest import TITLES, UiStack, nav_titles, running_ui

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.browser]


@pytest.fixture(scope="module")
def ui_url(ui_stack: UiStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``lookalike ui`` as a real process, with a cluster map of the collection saved."""
    store = ui_stack.store()
    report = cluster_collection(store, k=6, projection="pca")
    cluster_map.save(report, cluster_map.map_file(ui_stack.home, ui_stack.collection))
    with running_ui({}, tmp_path_factory.mktemp("ui-log") / "ui.log") as (url, _):
        yield url


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("UI_SCREENSHOTS")
    target = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def results_count(page: object) -> int:
    text = page.get_by_text(re.compile(r"^\d+ results")).first.inner_text()  # type: ignore[attr-defined]
    return int(text.split()[0])


def test_browser_searches_opens_duplicates_and_a_cluster(
    ui_url: str, ui_stack: UiStack, browser: object, shots: Path
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    page.set_default_timeout(60_000)

    # Search by an uploaded image: a mirrored copy finds its original and the other copies.
    page.goto(ui_url)
    page.get_by_text("Upload an image").first.wait_for()
    query = ui_stack.photos / "copies" / "astronaut_mirrored.jpg"
    page.locator("input[type=file]").set_input_files(str(query))
    page.get_by_text(re.compile(r"^\d+ results")).first.wait_for()
    assert results_count(page) == 6
    for name in ("astronaut.png", "astronaut_rotated.jpg", "astronaut_resized.jpg"):
        page.get_by_text(name).first.wait_for()
    page.screenshot(path=str(shots / "ui-search.png"), full_page=True)

    # An unreadable upload is a message on the page, not a traceback.
    broken = ui_stack.home / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    page.locator("input[type=file]").set_input_files(str(broken))
    page.get_by_text("cannot decode").first.wait_for()
    assert page.get_by_text("Traceback").count() == 0

    # An off-centre crop (a fifth of each side, nearly all off one corner, halved): no pHash
    # or frame code meets its original, their patch codes do (the UI server's patch index).
    coffee = Image.open(ui_stack.photos / "originals" / "coffee.png").convert("RGB")
    off_centre_cut(coffee).save(ui_stack.home / "coffee_cut.jpg", quality=75)
    page.locator("input[type=file]").set_input_files(str(ui_stack.home / "coffee_cut.jpg"))
    page.get_by_text(re.compile(r"\d+ patches")).first.wait_for()
    page.get_by_text("coffee.png").first.wait_for()

    # Text search: the tiny CLIP ranks arbitrarily, but top-k results come back.
    page.get_by_text("Text", exact=True).click()
    box = page.get_by_label("Describe the image")
    box.fill("an astronaut in a white suit")
    box.press("Enter")
    page.get_by_text("(text;").first.wait_for()
    assert results_count(page) == 20
    page.screenshot(path=str(shots / "ui-text-search.png"), full_page=True)

    # Duplicates: the astronaut group, keeper first, its mirrored copy among the duplicates.
    page.goto(f"{ui_url}/duplicates")
    page.get_by_role("button", name=re.compile("^(Find duplicates|Recompute)$")).click()
    page.get_by_text(re.compile(r"^12 groups")).first.wait_for()
    page.get_by_text(re.compile(r"^Group 10 ·")).first.wait_for()
    page.get_by_text("★ KEEP").nth(9).wait_for()
    assert page.get_by_text("★ KEEP").count() == 10  # one keeper per group on the first page
    assert page.get_by_text("astronaut_mirrored.jpg").count() >= 1
    assert page.get_by_text("pHash distance 0 (mirrored)").count() >= 1
    page.screenshot(path=str(shots / "ui-duplicates.png"), full_page=True)

    # Clusters: the map, then one cluster's images.
    page.goto(f"{ui_url}/clusters")
    page.locator(".js-plotly-plot").first.wait_for()
    page.get_by_text("A cluster", exact=True).click()
    page.get_by_text(re.compile(r"^Cluster \d+: \d+ images")).first.wait_for()
    page.screenshot(path=str(shots / "ui-clusters.png"), full_page=True)

    for name in ("ingest", "collection"):
        page.goto(f"{ui_url}/{name}")
        page.get_by_role("heading", name=name.capitalize()).first.wait_for()
        page.wait_for_timeout(1500)
        page.screenshot(path=str(shots / f"ui-{name}.png"), full_page=True)
    assert page.get_by_text("Schema contract").count() == 1


def test_without_a_password_direct_urls_show_the_titled_navigation(
    ui_url: str, browser: object
) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})  # type: ignore[attr-defined]
    try:
        page = context.new_page()
        page.set_default_timeout(60_000)
        for path, heading in (("duplicates", "Duplicates"), ("collection", "Collection")):
            page.goto(f"{ui_url}/{path}")  # a fresh session each time
            page.get_by_role("heading", name=heading).first.wait_for()
            assert nav_titles(page) == TITLES
            assert page.get_by_label("Password", exact=True).count() == 0
    finally:
        context.close()
