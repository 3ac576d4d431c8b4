"""The edits bench.copy_detection makes copies with: each takes the base image and a random
generator seeded for that base and edit, so a run is reproducible and another seed gives other
random edits (crop positions, bar colours, rotation signs, corners)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont

Edit = Callable[[Image.Image, np.random.Generator], Image.Image]
_LANCZOS = Image.Resampling.LANCZOS
_BLACK, _WHITE = (0, 0, 0), (255, 255, 255)


def centred_crop(removed: float) -> Edit:
    """Keep the centred window of ``1 - removed`` of each side."""

    def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return _crop_at(image, removed, 0.5, 0.5)

    return crop


def off_centre_crop(removed: float) -> Edit:
    """Keep a window of ``1 - removed`` of each side at a random place: on each axis most of the
    removal (80-100%) comes off one side, chosen at random."""

    def crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        return _crop_at(image, removed, _one_sided(rng), _one_sided(rng))

    return crop


def _one_sided(rng: np.random.Generator) -> float:
    share = float(rng.uniform(0.0, 0.2))
    return share if rng.random() < 0.5 else 1.0 - share


def _crop_at(image: Image.Image, removed: float, left: float, top: float) -> Image.Image:
    """Cut ``removed`` of each side's length: a share ``left`` of it off the left, ``top`` off
    the top, the rest off the opposite sides."""
    w, h = image.size
    cut_x, cut_y = round(w * removed), round(h * removed)
    x, y = round(cut_x * left), round(cut_y * top)
    return image.crop((x, y, x + w - cut_x, y + h - cut_y))


def letterbox(share: float) -> Edit:
    """Bars above and below covering ``share`` of the copy's height: black, one time in four
    white."""

    def edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        colour = _WHITE if rng.random() < 0.25 else _BLACK
        bar = round(image.height * share / (2 * (1 - share)))
        canvas = Image.new("RGB", (image.width, image.height + 2 * bar), colour)
        canvas.paste(image, (0, bar))
        return canvas

    return edit


def pillarbox(share: float) -> Edit:
    """Black bars left and right covering ``share`` of the copy's width."""

    def edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        bar = round(image.width * share / (2 * (1 - share)))
        canvas = Image.new("RGB", (image.width + 2 * bar, image.height), _BLACK)
        canvas.paste(image, (bar, 0))
        return canvas

    return edit


def rotation(degrees: float) -> Edit:
    """A turn by ``degrees`` of random sign about the centre, frame kept, black corners."""

    def edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        angle = degrees if rng.random() < 0.5 else -degrees
        return image.rotate(angle, Image.Resampling.BICUBIC, expand=False, fillcolor=_BLACK)

    return edit


def resize_half(image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), _LANCZOS)


def noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, np.float64) + rng.normal(0.0, 10.0, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def text(image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    """Two lines of large text over the photo (a caption at the bottom, a handle at the top)."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    font = ImageFont.load_default(size=max(12, h // 12))
    draw.text((w // 20, h - h // 6), "Holiday 2019 - do not share", font=font, fill="white",
              stroke_width=2, stroke_fill="black")  # fmt: skip
    draw.text((w // 2, h // 20), "@lookalike", font=font, fill=(255, 255, 0))
    return out


def caption_bar(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A white bar of 12-20% of the height, above or below the photo, with black text."""
    w, h = image.size
    bar = round(h * float(rng.uniform(0.12, 0.2)))
    above = bool(rng.random() < 0.5)
    canvas = Image.new("RGB", (w, h + bar), _WHITE)
    canvas.paste(image, (0, bar if above else 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(10, bar * 2 // 5))
    top = (0 if above else h) + bar // 4
    draw.text((w // 25, top), "when the weekend finally arrives", font=font, fill=_BLACK)
    return canvas


def logo(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A semi-transparent watermark (a rounded badge with a mark) in a random corner."""
    w, h = image.size
    side = max(8, round(min(w, h) * float(rng.uniform(0.12, 0.2))))
    margin = max(2, min(w, h) // 40)
    corner = int(rng.integers(4))
    x = margin if corner % 2 == 0 else w - side - margin
    y = margin if corner < 2 else h - side - margin
    overlay = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    alpha = int(rng.integers(110, 170))
    draw.rounded_rectangle((x, y, x + side, y + side), side // 5, fill=(255, 255, 255, alpha))
    font = ImageFont.load_default(size=max(8, side // 2))
    draw.text((x + side // 5, y + side // 5), "LA", font=font, fill=(20, 20, 90, alpha + 60))
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")


def screenshot(image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
    """The photo in an app window: title bar, side borders, a toolbar of buttons below."""
    w, h = image.size
    top, side, bottom = h // 10, w // 20, h // 6
    canvas = Image.new("RGB", (w + 2 * side, h + top + bottom), (236, 236, 236))
    canvas.paste(image, (side, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, top - 4), fill=(48, 48, 56))
    for k, colour in enumerate(((237, 95, 87), (245, 190, 79), (98, 197, 84))):
        x = 12 + 22 * k
        draw.ellipse((x, top // 2 - 7, x + 14, top // 2 + 7), fill=colour)
    for k in range(5):
        x = side + k * (w // 5) + 10
        draw.rounded_rectangle((x, h + top + 12, x + w // 5 - 20, h + top + bottom - 12), 8,
                               fill=(0, 122, 255) if k == 0 else (200, 200, 205))  # fmt: skip
    return canvas


def combined(*edits: Edit) -> Edit:
    """The edits one after the other, each with the same generator."""

    def edit(image: Image.Image, rng: np.random.Generator) -> Image.Image:
        for step in edits:
            image = step(image, rng)
        return image

    return edit


def _same(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    return image


def _photometric(change: Callable[[Image.Image], Image.Image]) -> Edit:
    return lambda image, rng: change(image)


# name -> (edit, how the copy is saved: "JPEG<quality>" or "PNG").
TRANSFORMS: dict[str, tuple[Edit, str]] = {
    "resize 50%": (resize_half, "JPEG95"),
    "JPEG q=30": (_same, "JPEG30"),
    "mirror": (_photometric(lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), "JPEG95"),
    "rotate 90": (_photometric(lambda im: im.transpose(Image.Transpose.ROTATE_90)), "JPEG95"),
    "brightness +30%": (_photometric(lambda im: ImageEnhance.Brightness(im).enhance(1.3)),
                        "JPEG95"),
    "contrast -30%": (_photometric(lambda im: ImageEnhance.Contrast(im).enhance(0.7)), "JPEG95"),
    "blur r=2": (_photometric(lambda im: im.filter(ImageFilter.GaussianBlur(2))), "JPEG95"),
    "noise sigma=10": (noise, "JPEG95"),
    **{f"crop {p}% centred": (centred_crop(p / 100), "JPEG95") for p in (5, 10, 20, 25)},
    **{f"crop {p}% off-centre": (off_centre_crop(p / 100), "JPEG95") for p in (5, 10, 20, 25)},
    "letterbox 10%": (letterbox(0.10), "JPEG95"),
    "letterbox 15%": (letterbox(0.15), "JPEG95"),
    "pillarbox 10%": (pillarbox(0.10), "JPEG95"),
    "pillarbox 15%": (pillarbox(0.15), "JPEG95"),
    "screenshot padding": (screenshot, "PNG"),
    "text overlay": (text, "JPEG95"),
    "caption bar": (caption_bar, "JPEG95"),
    "logo overlay": (logo, "JPEG95"),
    **{f"rotate {d}°": (rotation(d), "JPEG95") for d in (2, 3, 5)},
    "crop 10% off-centre + text + resize 50%, JPEG q=60": (
        combined(off_centre_crop(0.10), text, resize_half), "JPEG60"
    ),
    "letterbox 10% + rotate 3°, JPEG q=70": (combined(letterbox(0.10), rotation(3)), "JPEG70"),
}  # fmt: skip
# The lower bar: a quarter of each side gone leaves too little of the frame for 0.95.
RECALL_FLOOR = {name: 0.80 for name in TRANSFORMS if name.startswith("crop 25%")}
