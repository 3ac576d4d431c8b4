"""Thumbnails are made from local files and from s3:// objects (moto's server) alike."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from services import sources
from testkit.s3server import S3Server
from ui.thumbs import Thumbnails


def test_a_thumbnail_of_an_object_then_of_a_file(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    s3_server.reset()
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    sources._s3_client.cache_clear()
    buffer = io.BytesIO()
    Image.new("RGB", (600, 400), (200, 30, 30)).save(buffer, "PNG")
    client = s3_server.client()
    client.create_bucket(Bucket="photos")
    client.put_object(Bucket="photos", Key="red.png", Body=buffer.getvalue())
    Image.new("RGB", (300, 300), (30, 30, 200)).save(tmp_path / "blue.png")
    thumbs = Thumbnails(tmp_path / "thumbs", max_pixels=10**7)

    made = thumbs.path_for("ab" * 32, ["s3://photos/gone.png", "s3://photos/red.png"])
    assert made is not None
    with Image.open(made) as image:
        assert max(image.size) == 256 and image.getpixel((10, 10))[0] > 150  # type: ignore[index]
    local = thumbs.path_for("cd" * 32, [str(tmp_path / "blue.png")])
    assert local is not None
    sources._s3_client.cache_clear()
