"""Which files a folder walk hands to ingestion, and which entries it reports as not images."""

from __future__ import annotations

import os
from pathlib import Path

from services.discovery import discover
from testkit.imagegen import make_photo_like


def _jpeg(path: Path, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    make_photo_like(seed, (32, 24)).save(path, "JPEG")
    return path


def _walk(*roots: Path, recursive: bool = True) -> dict[str, str | None]:
    return {str(f.path): f.problem for f in discover(list(roots), recursive=recursive)}


def test_walk_takes_images_by_extension_and_by_sniffing(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    a = _jpeg(root / "a.jpg")
    b = _jpeg(root / "sub" / "b.JPEG")
    sniffed = _jpeg(root / "IMG_0001")  # no extension
    odd = _jpeg(root / "photo.jpg_large")  # unknown extension, image bytes
    (root / "notes.txt").write_text("text")
    (root / "data.bin").write_bytes(b"\x00" * 64)
    _jpeg(root / ".hidden.jpg")
    _jpeg(root / ".thumbnails" / "t.jpg")
    assert _walk(root) == {str(p): None for p in (a, sniffed, odd, b)}
    assert list(_walk(root)) == [str(sniffed), str(a), str(odd), str(b)]  # sorted, root first
    assert _walk(root, recursive=False) == {str(p): None for p in (a, sniffed, odd)}


def test_symlinks_are_followed_only_inside_the_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "photos", tmp_path / "elsewhere"
    real = _jpeg(root / "real.jpg")
    secret = _jpeg(outside / "secret.jpg")
    (root / "inside_link.jpg").symlink_to(real)
    (root / "outside_link.jpg").symlink_to(secret)
    (root / "folder_link").symlink_to(outside, target_is_directory=True)
    (root / "dangling.jpg").symlink_to(root / "missing.jpg")
    found = _walk(root)
    assert found == {
        str(root / "dangling.jpg"): "broken symbolic link",
        str(root / "inside_link.jpg"): None,
        str(real): None,
    }
    # Given both roots, the link into the second root is followed.
    assert str(root / "outside_link.jpg") in _walk(root, outside)


def test_entries_that_cannot_be_images_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "album.jpg").mkdir(parents=True)
    inner = _jpeg(root / "album.jpg" / "inside.jpg")
    os.mkfifo(root / "pipe.jpg")
    found = _walk(root, tmp_path / "missing")
    assert found[str(root / "album.jpg")] == "is a folder named like an image, not an image file"
    assert found[str(inner)] is None  # the folder is still walked
    assert found[str(root / "pipe.jpg")] is None  # named like an image: decoding says why not
    assert found[str(tmp_path / "missing")] == "does not exist"


def test_paths_are_absolute(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    _jpeg(tmp_path / "photos" / "a.jpg")
    monkeypatch.chdir(tmp_path)
    assert _walk(Path("photos")) == {str(tmp_path / "photos" / "a.jpg"): None}
