"""The demo collection: scikit-image's bundled sample photos plus transformed copies of them.

Each original gets copies a real photo library accumulates (resized, recompressed, cropped,
mirrored, rotated, tinted, and a byte-identical copy elsewhere), so search and duplicate finding
have something true to show. Written once under ``LOOKALIKE_HOME/demo``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from services.app import connect
from services.embed import Embedder
from services.pipeline import load_for_signals
from services.search import DEFAULT_MAX_HAMMING, SearchQuery, SearchResult, search
from services.settings import Settings

log = logging.getLogger(__name__)

# Bundled with scikit-image (no download); photographs first, then textures and scans.
SAMPLES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "moon",
    "coins",
    "clock",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
)

DEMO_COLLECTION = "demo"
DEMO_QUERY = "copies/astronaut_mirrored.jpg"

Transform = Callable[[Image.Image], Image.Image]


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    return image.crop((w // 12, h // 12, w - w // 12, h - h // 12))


def _tint(image: Image.Image) -> Image.Image:
    warm = Image.new("RGB", image.size, (255, 180, 90))
    return ImageEnhance.Contrast(Image.blend(image, warm, 0.15)).enhance(1.1)


TRANSFORMS: dict[str, Transform] = {
    "resized": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
    "cropped": _crop,
    "mirrored": lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    "rotated": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "tinted": _tint,
}


def sample_image(name: str) -> Image.Image:
    """A scikit-image sample as an RGB PIL image."""
    import skimage.data

    array = np.asarray(getattr(skimage.data, name)())
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array)
    return image.convert("RGB")


def build_demo_collection(root: Path, *, samples: tuple[str, ...] = SAMPLES) -> list[Path]:
    """Write the demo photos under ``root`` (replacing it); returns the files written."""
    if root.exists():
        shutil.rmtree(root)
    originals, copies = root / "originals", root / "copies"
    originals.mkdir(parents=True)
    copies.mkdir()
    written: list[Path] = []
    for name in samples:
        image = sample_image(name)
        original = originals / f"{name}.png"
        image.save(original)
        written.append(original)
        recompressed = copies / f"{name}_recompressed.jpg"
        image.save(recompressed, quality=40)
        written.append(recompressed)
        for label, transform in TRANSFORMS.items():
            target = copies / f"{name}_{label}.jpg"
            transform(image).save(target, quality=90)
            written.append(target)
        exact = root / "backup" / f"{name}.png"
        exact.parent.mkdir(exist_ok=True)
        shutil.copyfile(original, exact)
        written.append(exact)
    log.info("demo collection: %d files under %s", len(written), root)
    return written


def example_search(
    settings: Settings, uri: str, embedder: Embedder | None, *, collection: str = DEMO_COLLECTION
) -> SearchResult:
    """The demo's example: the mirrored astronaut, hybrid search over the demo collection."""
    probe = load_for_signals(
        settings.home / "demo" / DEMO_QUERY, max_pixels=settings.max_image_pixels, embedder=embedder
    )
    lookalike = connect(settings, uri, embedder=embedder, load_model=False, collection=collection)
    try:
        query = SearchQuery(image=probe.image, max_hamming=DEFAULT_MAX_HAMMING, top_k=8)
        return search(lookalike.store, embedder, query)
    finally:
        lookalike.close()
