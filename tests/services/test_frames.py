"""Frame codes: borders are found and peeled, crops and bordered copies come back within radius."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from services.frame_pairs import frame_pairs
from services.frames import WHOLE, Box, FrameCodes, content_box, frame_codes
from services.hamming_pairs import codes_from_bytes
from services.hashing import hamming, phash
from services.records import ImageRecord, from_row, to_row
from testkit.imagegen import sample_photos

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "horse", "clock", "coins")


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: image.convert("RGB") for name, image in sample_photos(PHOTOS).items()}


def _jpeg(image: Image.Image, quality: int = 80) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _letterbox(image: Image.Image, share: float, colour: tuple[int, int, int]) -> Image.Image:
    bar = round(image.height * share)
    canvas = Image.new("RGB", (image.width, image.height + 2 * bar), colour)
    canvas.paste(image, (0, bar))
    return canvas


def _pillarbox(image: Image.Image, share: float) -> Image.Image:
    bar = round(image.width * share)
    canvas = Image.new("RGB", (image.width + 2 * bar, image.height), (0, 0, 0))
    canvas.paste(image, (bar, 0))
    return canvas


def _screenshot(image: Image.Image) -> Image.Image:
    w, h = image.size
    top, side, bottom = h // 10, w // 20, h // 6
    canvas = Image.new("RGB", (w + 2 * side, h + top + bottom), (236, 236, 236))
    canvas.paste(image, (side, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, top - 4), fill=(48, 48, 56))
    for k, colour in enumerate(((237, 95, 87), (245, 190, 79), (98, 197, 84))):
        draw.ellipse((12 + 22 * k, top // 2 - 6, 24 + 22 * k, top // 2 + 6), fill=colour)
    for k in range(4):
        x = side + k * (w // 4) + 8
        draw.rounded_rectangle(
            (x, h + top + 10, x + w // 4 - 16, h + top + bottom - 10),
            6,
            fill=(0, 122, 255) if k == 0 else (200, 200, 205),
        )
    return canvas


def _caption(image: Image.Image) -> Image.Image:
    bar = image.height // 6
    canvas = Image.new("RGB", (image.width, image.height + bar), (255, 255, 255))
    canvas.paste(image, (0, bar))
    font = ImageFont.load_default(size=max(12, bar // 3))
    ImageDraw.Draw(canvas).text((10, bar // 4), "when you see it #lol", fill=(0, 0, 0), font=font)
    return canvas


def _close(box: Box, expected: tuple[float, float, float, float], tolerance: float) -> bool:
    got = (box.left, box.top, box.right, box.bottom)
    return all(abs(a - b) <= tolerance for a, b in zip(got, expected, strict=True))


def test_photos_without_borders_keep_their_whole_frame(photos: dict[str, Image.Image]) -> None:
    for name, image in photos.items():
        assert content_box(_jpeg(image)) == WHOLE, name


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255)])
def test_letterbox_bars_are_peeled(photos: dict[str, Image.Image], colour: tuple[int, ...]) -> None:
    for name, image in photos.items():
        if name == "horse" and colour == (255, 255, 255):
            continue  # a white bar on a white background is no border: nothing tells them apart
        boxed = _jpeg(_letterbox(image, 0.12, (colour[0], colour[1], colour[2])), 70)
        share = round(image.height * 0.12) / boxed.height
        assert _close(content_box(boxed), (0.0, share, 1.0, 1.0 - share), 0.02), name


def test_pillarbox_screenshot_and_caption_are_peeled(photos: dict[str, Image.Image]) -> None:
    for name, image in photos.items():
        w, h = image.size
        pillar = _jpeg(_pillarbox(image, 0.15))
        side = round(w * 0.15) / pillar.width
        assert _close(content_box(pillar), (side, 0.0, 1.0 - side, 1.0), 0.02), name
        shot = _jpeg(_screenshot(image))
        expected = (
            (w // 20) / shot.width,
            (h // 10) / shot.height,
            (w // 20 + w) / shot.width,
            (h // 10 + h) / shot.height,
        )
        assert _close(content_box(shot), expected, 0.025), name
        if name == "horse":
            continue  # a white caption bar on a white background is no border
        captioned = _jpeg(_caption(image))
        bar = (h // 6) / captioned.height
        assert _close(content_box(captioned), (0.0, bar, 1.0, 1.0), 0.025), name


@pytest.mark.parametrize("above", [True, False])
def test_a_caption_bar_whose_text_fills_lines_is_peeled_at_ingestion_size(
    photos: dict[str, Image.Image], above: bool
) -> None:
    # At ingestion's draft decode (about 160 pixels a side) a caption's glyphs blur into lines
    # that are neither the bar's colour nor flat: the bar is peeled only if they count as text.
    for name, image in photos.items():
        if name == "horse":
            continue  # a white caption bar on a white background is no border
        w, h = image.size
        bar = h // 6
        canvas = Image.new("RGB", (w, h + bar), (255, 255, 255))
        canvas.paste(image, (0, bar if above else 0))
        font = ImageFont.load_default(size=bar * 2 // 5)
        top = (0 if above else h) + bar // 4
        ImageDraw.Draw(canvas).text((w // 25, top), "when the weekend finally arrives at last",
                                    fill=(0, 0, 0), font=font)  # fmt: skip
        small = _jpeg(canvas.resize((160, round(160 * canvas.height / w)), Image.Resampling.BOX))
        share = bar / canvas.height
        expected = (0.0, share, 1.0, 1.0) if above else (0.0, 0.0, 1.0, 1.0 - share)
        assert _close(content_box(small), expected, 0.03), (name, content_box(small))


def test_bordered_copies_match_by_content_and_crops_by_windows(
    photos: dict[str, Image.Image],
) -> None:
    for name, image in photos.items():
        original = frame_codes(image)
        boxed = _jpeg(_letterbox(image, 0.15, (0, 0, 0)))
        assert hamming(phash(boxed), phash(image)) > 8, name  # what a pHash alone misses
        assert hamming(frame_codes(boxed).content, phash(image)) <= 8, name
        w, h = image.size
        cropped = _jpeg(image.crop((w // 10, h // 10, w - w // 10, h - h // 10)))
        assert hamming(phash(cropped), phash(image)) > 8, name
        assert hamming(frame_codes(cropped).content, original.windows[1]) <= 8, name


def test_a_crop_meets_its_original_whose_plain_edge_was_peeled(
    photos: dict[str, Image.Image],
) -> None:
    # A photo with a plain band along one side that ends in a straight line (a wall, a table's
    # edge) looks bordered and is peeled; a centred crop that cuts the band away is not. The
    # crop still meets the photo's window of its share: windows are of the whole frame.
    for name, image in photos.items():
        w, h = image.size
        banded = image.copy()
        banded.paste((200, 200, 200), (0, 0, w, h * 8 // 100))
        original = frame_codes(banded)
        assert not original.box.whole, name  # the premise: the band is taken for a border
        cropped = frame_codes(_jpeg(banded.crop((w // 10, h // 10, w - w // 10, h - h // 10))))
        assert hamming(cropped.content, original.windows[1]) <= 8, name


def test_frame_pairs_pair_copies_and_not_other_photos(photos: dict[str, Image.Image]) -> None:
    images: list[Image.Image] = []
    owner: list[str] = []
    for name, image in photos.items():
        w, h = image.size
        for copy in (
            image,
            _jpeg(_letterbox(image, 0.12, (0, 0, 0))),
            _jpeg(_screenshot(image)),
            _jpeg(image.crop((w // 10, h // 10, w - w // 10, h - h // 10))),
        ):
            images.append(copy)
            owner.append(name)
    codes = codes_from_bytes([phash(image) for image in images])
    frames = np.array(
        [
            [int.from_bytes(c, "big") for c in (f.content, *f.windows)]
            for f in map(frame_codes, images)
        ],
        dtype=np.uint64,
    )
    found = frame_pairs(codes, frames, 8)
    pairs = set(zip(found.left.tolist(), found.right.tolist(), strict=True))
    assert all(owner[a] == owner[b] for a, b in pairs)
    for start in range(0, len(images), 4):
        # The original (start) with each of its three copies.
        assert {(start, start + k) for k in (1, 2, 3)} <= pairs, owner[start]


def test_frame_codes_round_trip_through_a_row(photos: dict[str, Image.Image]) -> None:
    image = photos["coffee"]
    codes = frame_codes(image)
    assert FrameCodes.from_hex(codes.to_hex()) == FrameCodes(WHOLE, codes.content, codes.windows)
    record = ImageRecord("a" * 64, "/x.jpg", phash(image), 600, 400, "JPEG", 1, frames=codes)
    row = to_row(record, with_clip=False, max_paths=4)
    assert len(row["frame_codes"]) == 64
    back = from_row(row)
    assert back.frames is not None and back.frames.to_hex() == codes.to_hex()
    assert from_row({**row, "frame_codes": ""}).frames is None
    with pytest.raises(ValueError, match="hex digits"):
        FrameCodes.from_hex("ab")
