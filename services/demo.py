"""The demo collection: scikit-image's bundled sample photos plus transformed copies of them.

Each original gets copies a real photo library accumulates (resized, recompressed, cropped,
mirrored, rotated, tinted, and a byte-identical copy elsewhere), so search and duplicate finding
have something true to show. Written once under ``LOOKALIKE_HOME/demo``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from services.app import connect
from services.embed import Embedder
from services.pipeline import Failure, index_batch, load_for_signals
from services.search import DEFAULT_MAX_HAMMING, SearchQuery, SearchResult, search
from services.settings import Settings
from services.store import drop_collection

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


@dataclass(frozen=True)
class DemoSummary:
    files: int
    rows: int
    failures: list[Failure]
    example: SearchResult


def index_demo(settings: Settings, uri: str, embedder: Embedder | None) -> DemoSummary:
    """Rebuild the demo collection from scratch at ``uri`` and run one example search."""
    root = settings.home / "demo"
    files = build_demo_collection(root)
    # The demo collection is rebuilt each time: the model may differ from the last run.
    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    drop_collection(uri, DEMO_COLLECTION, token=token)
    lookalike = connect(
        settings, uri, embedder=embedder, load_model=False, collection=DEMO_COLLECTION
    )
    try:
        failures: list[Failure] = []
        for start in range(0, len(files), settings.clip_batch_size):
            batch = files[start : start + settings.clip_batch_size]
            outcome = index_batch(
                lookalike.store,
                embedder,
                batch,
                max_pixels=settings.max_image_pixels,
                source="demo",
            )
            failures += outcome.failures
        probe = load_for_signals(
            root / DEMO_QUERY, max_pixels=settings.max_image_pixels, embedder=embedder
        )
        example = search(
            lookalike.store,
            embedder,
            SearchQuery(image=probe.image, max_hamming=DEFAULT_MAX_HAMMING, top_k=8),
        )
        return DemoSummary(len(files), lookalike.store.count(), failures, example)
    finally:
        lookalike.close()
