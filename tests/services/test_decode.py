"""services.decode: every mode to RGB, orientation, frames, drafts, and typed errors."""

from __future__ import annotations

import io
import os
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from services import decode
from services.decode import LoadedImage, load_image, load_image_bytes
from services.errors import DecodeError, ImageTooLargeError, UnsupportedImageError
from testkit.imagegen import make_photo_like

LIMIT = 50_000_000
WHITE = (255, 255, 255)


def encode(image: Image.Image, image_format: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def load(data: bytes, **kwargs: object) -> LoadedImage:
    return load_image_bytes(data, "mem.img", max_pixels=LIMIT, **kwargs)  # type: ignore[arg-type]


def pixel(loaded: LoadedImage, xy: tuple[int, int]) -> tuple[int, int, int]:
    value = loaded.image.getpixel(xy)
    assert isinstance(value, tuple)
    return (value[0], value[1], value[2])


def png_chunk(chunk_type: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + chunk_type
        + body
        + struct.pack(">I", zlib.crc32(chunk_type + body))
    )


def crafted_png(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` but which carries almost no pixel data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + png_chunk(b"IEND", b"")
    )


# --- modes ------------------------------------------------------------------------------------


def test_rgb_jpeg_roundtrip_keeps_size_format_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    make_photo_like(1, (120, 80)).save(path, "JPEG")
    loaded = load_image(path, max_pixels=LIMIT)
    assert loaded.image.mode == "RGB"
    assert (loaded.width, loaded.height) == (120, 80) == loaded.image.size
    assert loaded.format == "JPEG"
    assert loaded.data == path.read_bytes()
    assert loaded.path == str(path)


def test_rgba_is_composited_over_white() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (5, 0, 10, 10))  # opaque blue on the right half
    rgba.putpixel((0, 9), (0, 0, 0, 128))  # half-transparent black
    loaded = load(encode(rgba, "PNG"))
    assert loaded.image.mode == "RGB"
    assert pixel(loaded, (0, 0)) == WHITE
    assert pixel(loaded, (7, 5)) == (0, 0, 255)
    assert all(abs(channel - 127) <= 1 for channel in pixel(loaded, (0, 9)))


def test_la_is_composited_over_white() -> None:
    la = Image.new("LA", (8, 8), (0, 0))
    la.paste((0, 255), (0, 0, 4, 8))
    loaded = load(encode(la, "PNG"))
    assert pixel(loaded, (6, 3)) == WHITE
    assert pixel(loaded, (1, 3)) == (0, 0, 0)


def test_palette_with_transparency_goes_through_rgba() -> None:
    palette_image = Image.new("P", (8, 8), 1)
    palette_image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    palette_image.paste(0, (0, 0, 4, 8))
    data = encode(palette_image, "PNG", transparency=0)  # index 0 (red) is transparent
    loaded = load(data)
    assert pixel(loaded, (1, 1)) == WHITE
    assert pixel(loaded, (6, 1)) == (0, 255, 0)


def test_palette_without_transparency() -> None:
    palette_image = Image.new("RGB", (8, 8), (10, 200, 30)).convert(
        "P", palette=Image.Palette.ADAPTIVE
    )
    loaded = load(encode(palette_image, "PNG"))
    assert pixel(loaded, (3, 3)) == (10, 200, 30)


@pytest.mark.parametrize("image_format", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(image_format: str) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 0, 0, 0))  # no ink: white
    cmyk.paste((0, 255, 255, 0), (8, 0, 16, 16))  # magenta + yellow ink: red
    loaded = load(encode(cmyk, image_format))
    assert loaded.image.mode == "RGB"
    assert all(channel >= 250 for channel in pixel(loaded, (2, 8)))
    red, green, blue = pixel(loaded, (13, 8))
    assert red >= 240 and green <= 15 and blue <= 15


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    loaded = load(encode(image, "PNG"))
    row = [pixel(loaded, (x, 0))[0] for x in range(4)]
    assert row == [0, 1, 128, 255]
    assert len(set(pixel(loaded, (2, 0)))) == 1  # gray


def test_sixteen_bit_gradient_keeps_its_range() -> None:
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    loaded = load(encode(Image.fromarray(gradient), "PNG"))
    gray = np.asarray(loaded.image)[0, :, 0]
    assert gray[0] == 0 and gray[-1] == 255
    assert np.all(np.diff(gray.astype(int)) >= 0)
    assert len(np.unique(gray)) > 200  # clipping at 255 would leave almost nothing


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16B", np.array([[0, 65535]], dtype=">u2"), [0, 255]),
        ("I", np.array([[0, 32896, 65535, 70000]], dtype=np.int32), [0, 128, 255, 255]),
        ("F", np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),
        ("F", np.array([[0.0, 100.0, 255.0]], dtype=np.float32), [0, 100, 255]),
        ("F", np.array([[-1.0, 0.0, 1000.0]], dtype=np.float32), [0, 0, 255]),
    ],
)
def test_wide_grayscale_modes(mode: str, values: np.ndarray, expected: list[int]) -> None:
    image = Image.fromarray(values)
    assert image.mode == mode
    rgb = decode._to_rgb(image)
    assert rgb.mode == "RGB"
    row = [rgb.getpixel((x, 0)) for x in range(values.shape[1])]
    assert [value[0] for value in row] == pytest.approx(expected, abs=1)  # type: ignore[index]


@pytest.mark.parametrize("mode", ["I", "F"])
def test_wide_grayscale_tiff_files(mode: str) -> None:
    image = Image.fromarray(np.array([[0, 65535]], dtype=np.int32)).convert(mode)
    loaded = load(encode(image, "TIFF"))
    assert loaded.image.mode == "RGB"
    assert pixel(loaded, (0, 0)) == (0, 0, 0)
    assert pixel(loaded, (1, 0)) == WHITE


@pytest.mark.parametrize("mode", ["PA", "La", "RGBa"])
def test_other_alpha_modes_over_white(mode: str) -> None:
    source = Image.new("LA", (4, 4), (0, 0)) if mode == "La" else Image.new("RGBA", (4, 4))
    image = source.convert(mode)
    assert decode._to_rgb(image).getpixel((1, 1)) == WHITE


@pytest.mark.parametrize(("mode", "fill", "expected"), [("1", 1, WHITE), ("L", 77, (77, 77, 77))])
def test_bilevel_and_gray(mode: str, fill: int, expected: tuple[int, int, int]) -> None:
    loaded = load(encode(Image.new(mode, (9, 7), fill), "PNG"))
    assert loaded.image.mode == "RGB"
    assert pixel(loaded, (4, 4)) == expected


def test_grayscale_png_with_transparent_value() -> None:
    gray = Image.new("L", (4, 4), 0)
    gray.putpixel((3, 3), 200)
    loaded = load(encode(gray, "PNG", transparency=0))
    assert pixel(loaded, (0, 0)) == WHITE
    assert pixel(loaded, (3, 3)) == (200, 200, 200)


# --- orientation and frames -------------------------------------------------------------------


def two_colour_jpeg(orientation: int, size: tuple[int, int] = (60, 40)) -> bytes:
    """Left half red, right half blue, tagged with an EXIF orientation."""
    image = Image.new("RGB", size, (255, 0, 0))
    image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)


def is_red(rgb: tuple[int, int, int]) -> bool:
    return rgb[0] > 200 and rgb[2] < 60


def is_blue(rgb: tuple[int, int, int]) -> bool:
    return rgb[2] > 200 and rgb[0] < 60


def test_exif_orientation_6_rotates_and_swaps_size() -> None:
    loaded = load(two_colour_jpeg(6))
    assert (loaded.width, loaded.height) == (40, 60) == loaded.image.size
    # Orientation 6 means "rotate 90° clockwise to display": the left (red) half ends on top.
    assert is_red(pixel(loaded, (20, 5)))
    assert is_blue(pixel(loaded, (20, 55)))
    assert loaded.exif is not None and loaded.exif[0x0112] == 6


def test_exif_orientation_3_rotates_180() -> None:
    loaded = load(two_colour_jpeg(3))
    assert loaded.image.size == (60, 40)
    assert is_blue(pixel(loaded, (5, 20)))
    assert is_red(pixel(loaded, (55, 20)))


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), colour) for colour in [(255, 0, 0), (0, 255, 0)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    loaded = load(data)
    assert loaded.format == "GIF"
    assert pixel(loaded, (5, 5)) == (255, 0, 0)


@pytest.mark.parametrize("image_format", ["PNG", "WEBP"])
def test_animated_png_and_webp_give_first_frame(image_format: str) -> None:
    frames = [Image.new("RGB", (10, 10), colour) for colour in [(0, 0, 255), (255, 255, 0)]]
    params: dict[str, object] = {"save_all": True, "append_images": frames[1:], "duration": 50}
    if image_format == "WEBP":
        params["lossless"] = True
    loaded = load(encode(frames[0], image_format, **params))
    assert loaded.format == image_format
    assert pixel(loaded, (5, 5)) == (0, 0, 255)


# --- JPEG draft -------------------------------------------------------------------------------


def test_jpeg_draft_decodes_smaller_but_reports_full_size() -> None:
    data = encode(make_photo_like(2, (1600, 1200)), "JPEG")
    loaded = load(data, draft_size=(64, 64))
    assert (loaded.width, loaded.height) == (1600, 1200)
    assert loaded.image.size == (200, 150)  # 1/8 scale is the smallest that stays >= 64 px
    assert loaded.image.mode == "RGB"
    full = load(data)
    assert full.image.size == (1600, 1200)


def test_jpeg_draft_stays_at_least_the_requested_size() -> None:
    data = encode(make_photo_like(3, (640, 480)), "JPEG")
    loaded = load(data, draft_size=(64, 64))
    assert loaded.image.size == (160, 120)  # 1/8 would give 60 px high, below 64


def test_no_draft_when_image_is_not_much_larger() -> None:
    data = encode(make_photo_like(4, (100, 100)), "JPEG")
    assert load(data, draft_size=(64, 64)).image.size == (100, 100)


def test_draft_with_rotation_reports_oriented_full_size() -> None:
    loaded = load(two_colour_jpeg(6, (800, 400)), draft_size=(32, 32))
    assert (loaded.width, loaded.height) == (400, 800)
    assert loaded.image.size == (50, 100)
    assert is_red(pixel(loaded, (25, 10)))


def test_draft_ignored_for_png() -> None:
    data = encode(make_photo_like(5, (400, 300)), "PNG")
    assert load(data, draft_size=(32, 32)).image.size == (400, 300)


# --- errors -----------------------------------------------------------------------------------


def assert_decode_error(
    path: Path, reason_part: str, error_type: type[DecodeError] = DecodeError, **kwargs: object
) -> DecodeError:
    with pytest.raises(error_type) as caught:
        load_image(path, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)  # type: ignore[arg-type]
    assert str(path) in str(caught.value)
    assert caught.value.path == str(path)
    assert reason_part in caught.value.reason
    return caught.value


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_decode_error(path, "empty file")


def test_text_renamed_jpg_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are not the pixels you are looking for\n" * 20)
    assert_decode_error(path, "not an image (unrecognised format)", UnsupportedImageError)


@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_truncated_jpeg(tmp_path: Path, fraction: float) -> None:
    data = encode(make_photo_like(6, (300, 200)), "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: int(len(data) * fraction)])
    error = assert_decode_error(path, "truncated image data")
    assert not isinstance(error, UnsupportedImageError)


def test_jpeg_cut_inside_header_is_corrupt_not_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "stub.jpg"
    path.write_bytes(encode(make_photo_like(6, (300, 200)), "JPEG")[:20])
    error = assert_decode_error(path, "corrupt JPEG")
    assert not isinstance(error, UnsupportedImageError)


def test_truncated_png(tmp_path: Path) -> None:
    data = encode(make_photo_like(7, (300, 200)), "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    assert_decode_error(path, "truncated image data")


def test_png_with_bad_header_crc(tmp_path: Path) -> None:
    data = bytearray(encode(make_photo_like(8, (64, 64)), "PNG"))
    data[29] ^= 0xFF  # the last byte of IHDR's CRC (8 signature + 8 chunk head + 13 body)
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    assert_decode_error(path, "bad CRC checksum in IHDR chunk")


def test_png_with_corrupt_pixel_data(tmp_path: Path) -> None:
    data = bytearray(encode(make_photo_like(8, (64, 64)), "PNG"))
    start = data.find(b"IDAT") + 4
    data[start + 2 : start + 40] = bytes(38)  # zero out part of the deflate stream
    path = tmp_path / "zlib.png"
    path.write_bytes(bytes(data))
    assert_decode_error(path, "")


def test_over_pixel_limit_from_header(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    make_photo_like(9, (1000, 800)).save(path, "PNG")
    error = assert_decode_error(path, "1000x800", ImageTooLargeError, max_pixels=500_000)
    assert "500000" in error.reason


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(crafted_png(100_000, 100_000))  # 10^10 pixels claimed, a few bytes of data
    assert_decode_error(path, "", ImageTooLargeError, max_pixels=100_000_000)


def test_bomb_refused_by_our_limit_below_pillows(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    path.write_bytes(crafted_png(20_000, 1_000))  # 2*10^7: under Pillow's limit, over ours
    error = assert_decode_error(path, "20000x1000", ImageTooLargeError, max_pixels=10_000_000)
    assert error.__cause__ is None  # our own header check, not a decode failure


def test_pillow_global_state_is_untouched(tmp_path: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    path = tmp_path / "bomb.png"
    path.write_bytes(crafted_png(100_000, 100_000))
    with pytest.raises(ImageTooLargeError):
        load_image(path, max_pixels=10**12)
    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


def test_directory_named_like_an_image(tmp_path: Path) -> None:
    path = tmp_path / "album.jpg"
    path.mkdir()
    assert_decode_error(path, "is a directory")


def test_broken_symlink(tmp_path: Path) -> None:
    path = tmp_path / "link.jpg"
    path.symlink_to(tmp_path / "gone.jpg")
    assert_decode_error(path, "broken symbolic link")


def test_missing_file(tmp_path: Path) -> None:
    assert_decode_error(tmp_path / "nope.png", "file not found")


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    assert_decode_error(path, "not a regular file")


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores file permissions; the mapping is covered by the simulated test below",
)
def test_unreadable_file_real_permissions(tmp_path: Path) -> None:
    path = tmp_path / "secret.jpg"
    make_photo_like(10, (32, 32)).save(path, "JPEG")
    path.chmod(0)
    try:
        assert_decode_error(path, "cannot read file: permission denied")
    finally:
        path.chmod(0o644)


def test_unreadable_file_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root in CI, where chmod cannot deny a read; simulate the OS refusal instead.
    path = tmp_path / "secret.jpg"
    make_photo_like(10, (32, 32)).save(path, "JPEG")

    def deny(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", deny)
    assert_decode_error(path, "cannot read file: permission denied")


def test_iso_media_without_heif_support_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    # As on an installation without pillow-heif (the state the opener registration leaves).
    monkeypatch.setattr(decode, "_heif_state", False)
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64)
    with pytest.raises(UnsupportedImageError, match="pillow-heif"):
        load(data)


def test_heic_decodes_when_pillow_heif_is_installed() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    loaded = load(encode(make_photo_like(11, (64, 48)), "HEIF"))
    assert loaded.format == "HEIF" and loaded.image.size == (64, 48)


def test_random_corruption_never_leaks_foreign_exceptions() -> None:
    rng = random.Random(1234)
    sources = [
        encode(make_photo_like(12, (96, 64)), "JPEG"),
        encode(make_photo_like(13, (96, 64)), "PNG"),
        encode(make_photo_like(14, (96, 64)).convert("P"), "GIF"),
        encode(make_photo_like(15, (96, 64)), "WEBP"),
        encode(make_photo_like(16, (96, 64)), "TIFF"),
        encode(make_photo_like(17, (96, 64)), "BMP"),
    ]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(600):
        data = bytearray(rng.choice(sources))
        if rng.random() < 0.5:
            del data[rng.randrange(1, len(data)) :]
        else:
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            loaded = load(bytes(data))
        except DecodeError:
            outcomes["error"] += 1
        else:
            assert loaded.image.mode == "RGB"
            outcomes["ok"] += 1
    assert outcomes["error"] > 0
