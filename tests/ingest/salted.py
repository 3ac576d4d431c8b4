"""A folder salted with every kind of bad file a real photo dump has, beside tricky good ones."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from testkit.imagegen import make_photo_like


def _jpeg(seed: int, size: tuple[int, int] = (96, 72), **save: object) -> bytes:
    buffer = io.BytesIO()
    make_photo_like(seed, size).save(buffer, "JPEG", quality=90, **save)
    return buffer.getvalue()


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def write_bad_files(folder: Path) -> dict[str, str]:
    """Bad entries: file name -> a word their failure reason must contain."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    good_png = _png(make_photo_like(900, (64, 48)))
    bad_crc = bytearray(good_png)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    bomb = Image.new("1", (12_000, 12_000))  # 144 Mpx that compress to a few KB
    files = {
        "zero bytes.jpg": b"",
        "truncated.jpg": _jpeg(901)[:600],
        "bad_crc.png": bytes(bad_crc),
        "text_renamed.jpg": b"just some notes, renamed to look like a photo\n" * 20,
        "bomb.png": _png(bomb),
        "huge_dimensions.png": _png_header_only(100_000, 100_000),
        "unreadable.jpg": _jpeg(902),
        "page.webp": b"<!doctype html><html><body>not a picture</body></html>",
        "truncated.png": good_png[: len(good_png) // 2],
        "header_only.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00",
        "random_bytes.png": rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(),
        "garbage.gif": b"GIF89a" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
        "broken.tif": b"II*\x00" + rng.integers(0, 256, 500, dtype=np.uint8).tobytes(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "unreadable.jpg").chmod(0)
    (folder / "broken_link.jpg").symlink_to(folder / "does-not-exist.jpg")
    (folder / "folder.jpg").mkdir()
    os.mkfifo(folder / "fifo.jpg")
    return {
        "zero bytes.jpg": "empty",
        "truncated.jpg": "truncated",
        "bad_crc.png": "CRC",
        "text_renamed.jpg": "not an image",
        "bomb.png": "pixels",
        "huge_dimensions.png": "pixels",
        "unreadable.jpg": "permission denied",
        "page.webp": "not an image",
        "truncated.png": "truncated",
        "header_only.jpg": "truncated",
        "random_bytes.png": "not an image",
        "garbage.gif": "GIF",
        "broken.tif": "not an image",
        "broken_link.jpg": "broken symbolic link",
        "folder.jpg": "folder",
        "fifo.jpg": "not a regular file",
    }


def write_good_files(folder: Path) -> list[str]:
    """Images that are awkward but fine: each must be stored. Returns their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    photo = make_photo_like(950, (120, 90))
    make_photo_like(951, (96, 72)).convert("CMYK").save(folder / "cmyk.jpg")
    sixteen = np.asarray(make_photo_like(952, (80, 60)).convert("L"), np.uint16) * 257
    Image.fromarray(sixteen.astype(np.uint16)).save(folder / "sixteen_bit.png")
    palette = make_photo_like(953, (80, 60)).convert("P", palette=Image.Palette.ADAPTIVE)
    palette.info["transparency"] = 0
    palette.save(folder / "palette_transparent.png", transparency=0)
    frames = [make_photo_like(954 + i, (64, 48)).convert("P") for i in range(3)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: view it turned 90 degrees
    photo.save(folder / "exif_rotated.jpg", exif=exif, quality=90)
    make_photo_like(958, (90, 60)).save(folder / "ünïcödé name with spaces.jpg", quality=90)
    make_photo_like(959, (64, 64)).convert("LA").save(folder / "gray_alpha.png")
    Image.new("RGB", (1, 1), (200, 30, 30)).save(folder / "tiny.png")
    (folder / "IMG_0001").write_bytes(_jpeg(960))  # no extension: found by sniffing
    (folder / "nested").mkdir()
    make_photo_like(961, (80, 60)).save(folder / "nested" / "deeper.webp")
    make_photo_like(962, (50, 40)).save(folder / "photo.bmp")
    make_photo_like(963, (70, 50)).save(folder / "photo.tiff")
    # Never ingested: hidden files and folders, and files that are not images.
    (folder / ".hidden.jpg").write_bytes(_jpeg(964))
    (folder / ".cache").mkdir()
    (folder / ".cache" / "thumb.jpg").write_bytes(_jpeg(965))
    (folder / "notes.txt").write_text("not an image, not a failure either")
    return [
        "cmyk.jpg",
        "sixteen_bit.png",
        "palette_transparent.png",
        "animated.gif",
        "exif_rotated.jpg",
        "ünïcödé name with spaces.jpg",
        "gray_alpha.png",
        "tiny.png",
        "IMG_0001",
        "nested/deeper.webp",
        "photo.bmp",
        "photo.tiff",
    ]
