"""Deterministic test images, generated with numpy and Pillow (no network, no data files).

``make_photo_like`` draws smooth colour gradients plus random shapes and a little noise, so
perceptual hashes are meaningful (not all-flat) and differ between seeds. Helpers here are
shared by the tests and the benchmarks; keep them free of assertions.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SAMPLE_NAMES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "camera",
    "immunohistochemistry",
    "horse",
    "hubble_deep_field",
    "moon",
    "page",
    "text",
    "clock",
    "coins",
    "grass",
    "gravel",
    "logo",
    "microaneurysms",
    "retina",
    "colorwheel",
    "brick",
    "cell",
    "shepp_logan_phantom",
)


def off_centre_cut(image: Image.Image) -> Image.Image:
    """A crop of a fifth of each side of ``image``, nearly all off one corner, halved: no
    whole-frame or centred-window code meets it, its patch codes agree with the original's
    (services.patches)."""
    w, h = image.size
    cut = image.crop((round(0.19 * w), round(0.01 * h), round(0.99 * w), round(0.81 * h)))
    return cut.resize((cut.width // 2, cut.height // 2))


def make_photo_like(seed: int, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """An RGB image of ``size`` (width, height) that looks vaguely like a photo."""
    rng = np.random.default_rng(seed)
    width, height = size
    # Low-frequency colour field: a coarse random grid upsampled smoothly.
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    base = Image.fromarray(coarse, "RGB").resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(base)
    for _ in range(int(rng.integers(3, 9))):
        x0, x1 = sorted(rng.integers(0, width, size=2).tolist())
        y0, y1 = sorted(rng.integers(0, height, size=2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse((x0, y0, x1 + 1, y1 + 1), fill=colour)
        else:
            draw.rectangle((x0, y0, x1 + 1, y1 + 1), fill=colour)
    blurred = base.filter(ImageFilter.GaussianBlur(radius=max(1.0, min(size) / 120)))
    noise = rng.normal(0.0, 4.0, size=(height, width, 3))
    pixels = np.clip(np.asarray(blurred, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def sample_photos(names: Iterable[str] = SAMPLE_NAMES) -> dict[str, Image.Image]:
    """scikit-image's bundled sample images (no download) as PIL images, by name."""
    import skimage.data

    photos = {}
    for name in names:
        array = getattr(skimage.data, name)()
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        elif array.dtype != np.uint8:
            array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255)
            array = array.astype(np.uint8)
        photos[name] = Image.fromarray(array)
    return photos


def save_variants(
    image: Image.Image, folder: Path, stem: str, formats: Iterable[str] = ("JPEG", "PNG")
) -> list[Path]:
    """Save ``image`` once per format into ``folder``; returns the paths written."""
    suffixes = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image_format in formats:
        path = folder / f"{stem}{suffixes.get(image_format, '.' + image_format.lower())}"
        converted = image.convert("RGB") if image_format == "JPEG" else image
        converted.save(path, image_format)
        paths.append(path)
    return paths
