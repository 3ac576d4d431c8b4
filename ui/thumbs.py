"""Thumbnails, generated once per content and kept on disk.

Rows are keyed by the content's sha256, so a thumbnail made for an id is valid for as long as
the content exists, whatever its paths become: ``<root>/<id[:2]>/<id>.jpg``. Pages never decode
an original twice; a file that cannot be read gets no thumbnail (and a placeholder on the page).
Originals are read through ``services.sources``: a local path or an ``s3://`` object.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from services.decode import load_image_bytes
from services.errors import DecodeError, SourceUnavailableError
from services.sources import Sources

SIZE = 256


class Thumbnails:
    def __init__(self, root: Path, *, max_pixels: int, size: int = SIZE) -> None:
        self.root = root
        self.size = size
        self._max_pixels = max_pixels
        self._sources = Sources()

    def path_for(self, content_id: str, paths: Sequence[str]) -> Path | None:
        """The thumbnail of ``content_id``, made from the first of ``paths`` that decodes."""
        target = self.root / content_id[:2] / f"{content_id}.jpg"
        if target.exists():
            return target
        for path in paths:
            try:
                loaded = load_image_bytes(
                    self._sources.read(path),
                    path,
                    max_pixels=self._max_pixels,
                    draft_size=(self.size, self.size),
                )
            except (DecodeError, SourceUnavailableError):
                continue
            self._write(target, loaded.image)
            return target
        return None

    def of_image(self, image: Image.Image) -> bytes:
        """A thumbnail of an image that is not stored (an upload), as JPEG bytes."""
        small = _shrunk(image, self.size)
        buffer = io.BytesIO()
        small.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()

    def _write(self, target: Path, image: Image.Image) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        small = _shrunk(image, self.size)
        # Written beside the target and renamed: a reader never sees half a file.
        handle, temporary = tempfile.mkstemp(dir=target.parent, suffix=".part")
        try:
            with os.fdopen(handle, "wb") as out:
                small.save(out, "JPEG", quality=85)
            Path(temporary).replace(target)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _shrunk(image: Image.Image, size: int) -> Image.Image:
    small = image.convert("RGB")
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    return small
