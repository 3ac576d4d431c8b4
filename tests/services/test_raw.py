"""Camera RAW decoding (services.raw through services.decode), on DNGs written by testkit."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
import rawpy
from PIL import Image

from services import raw as raw_module
from services.decode import load_image, load_image_bytes
from services.discovery import RAW_SUFFIXES, discover
from services.errors import DecodeError, ImageTooLargeError, UnsupportedImageError
from services.hashing import hamming, phash
from services.ingestion import MatchPolicy, ProcessLocks, ingest_paths
from services.metadata import extract_metadata
from testkit.imagegen import make_photo_like
from testkit.rawgen import RawExif, make_dng
from tests.conftest import StoreFactory

PICTURE = make_photo_like(3, (320, 240))
LIMIT = 10**8
# Orientation 6: the camera was turned a quarter clockwise; upright is the sensor image
# turned 90 degrees clockwise (Pillow's ROTATE_270).
UPRIGHT = {1: None, 3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270,
           8: Image.Transpose.ROTATE_90}  # fmt: skip


def _upright(orientation: int) -> Image.Image:
    fix = UPRIGHT[orientation]
    return PICTURE if fix is None else PICTURE.transpose(fix)


@pytest.mark.parametrize("preview", ["jpeg", "bitmap", None])
@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_a_dng_decodes_upright_rgb_at_its_full_size(preview: str | None, orientation: int) -> None:
    data = make_dng(PICTURE, preview=preview, orientation=orientation)  # type: ignore[arg-type]
    loaded = load_image_bytes(data, "shot.dng", max_pixels=LIMIT, draft_size=(32, 32))
    expected = _upright(orientation)
    assert loaded.format == "DNG" and loaded.image.mode == "RGB"
    assert (loaded.width, loaded.height) == expected.size
    # Without a preview libraw renders at half size, still twice the 32x32 asked for.
    half = (expected.width // 2, expected.height // 2)
    assert loaded.image.size == (half if preview is None else expected.size)
    # Upright, not merely the right shape: a 180 turn keeps the size, so compare content.
    assert hamming(phash(loaded.image), phash(expected)) <= 8
    assert loaded.data == data


def test_a_small_preview_is_a_draft_and_the_size_stays_the_sensors() -> None:
    data = make_dng(PICTURE, preview_size=(160, 120), orientation=6)
    small = load_image_bytes(data, "a.NEF", max_pixels=LIMIT, draft_size=(32, 32))
    assert small.image.size == (120, 160) and (small.width, small.height) == (240, 320)
    assert small.format == "NEF"
    # Asked for more than the preview holds, libraw renders the sensor data instead.
    full = load_image_bytes(data, "a.nef", max_pixels=LIMIT, draft_size=(224, 224))
    assert full.image.size == (240, 320) == (full.width, full.height)
    assert hamming(phash(small.image), phash(full.image)) <= 8


@pytest.mark.parametrize("preview", ["jpeg", None])
def test_the_raw_hashes_near_the_jpeg_of_the_same_shot(tmp_path: Path, preview: str | None) -> None:
    raw_path = tmp_path / "IMG_1.dng"
    raw_path.write_bytes(make_dng(PICTURE, preview=preview, orientation=6))  # type: ignore[arg-type]
    jpeg_path = tmp_path / "IMG_1.jpg"
    _upright(6).save(jpeg_path, quality=90)
    from_raw = load_image(raw_path, max_pixels=LIMIT, draft_size=(32, 32))
    from_jpeg = load_image(jpeg_path, max_pixels=LIMIT, draft_size=(32, 32))
    assert hamming(phash(from_raw.image), phash(from_jpeg.image)) <= 8
    assert (from_raw.width, from_raw.height) == (from_jpeg.width, from_jpeg.height)


@pytest.mark.parametrize("preview", ["jpeg", None])
def test_exif_date_camera_and_gps_are_read(preview: str | None) -> None:
    exif = RawExif(make="NIKON CORPORATION", model="NIKON Z 6", taken=datetime(2023, 7, 14, 9, 30),
                   gps=(48.8566, -2.3522))  # fmt: skip
    data = make_dng(PICTURE, preview=preview, exif=exif)  # type: ignore[arg-type]
    meta = extract_metadata(load_image_bytes(data, "z6.nef", max_pixels=LIMIT))
    assert meta.exif_datetime == datetime(2023, 7, 14, 9, 30)
    assert (meta.camera_make, meta.camera_model) == ("NIKON CORPORATION", "NIKON Z 6")
    assert meta.gps_lat == pytest.approx(48.8566, abs=1e-4)
    assert meta.gps_lon == pytest.approx(-2.3522, abs=1e-4)
    assert (meta.format, meta.width, meta.height) == ("NEF", 320, 240)


def test_over_the_pixel_limit_is_refused_before_decoding() -> None:
    data = make_dng(PICTURE)
    with pytest.raises(ImageTooLargeError, match=r"320x240 = 76800 pixels is over the limit"):
        load_image_bytes(data, "big.dng", max_pixels=320 * 240 - 1)


def test_damaged_raw_files_fail_with_a_clear_reason() -> None:
    whole = make_dng(PICTURE, preview=None)
    # Headers intact, pixel data cut short (the pixels are last, as cameras write them).
    with pytest.raises(DecodeError, match=r"cannot read RAW file: truncated or unreadable"):
        load_image_bytes(whole[: len(whole) // 2], "cut.dng", max_pixels=LIMIT)
    with pytest.raises(UnsupportedImageError, match=r"cannot read RAW file: not a RAW format"):
        load_image_bytes(os.urandom(20000), "noise.nef", max_pixels=LIMIT)
    with pytest.raises(DecodeError, match=r"empty file"):
        load_image_bytes(b"", "empty.dng", max_pixels=LIMIT)
    with pytest.raises(DecodeError) as caught:
        load_image_bytes(whole[:100], "header.cr2", max_pixels=LIMIT)
    assert "b'" not in caught.value.reason  # libraw's words, not the repr of its bytes


_LIBRAW_ERRORS = sorted(
    (
        value
        for value in vars(rawpy).values()
        if isinstance(value, type) and issubclass(value, rawpy.LibRawError)
    ),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize(
    "error", [*_LIBRAW_ERRORS, rawpy.NotSupportedError], ids=lambda e: e.__name__
)
def test_every_libraw_error_type_becomes_a_decode_error(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def failing(_source: object) -> None:
        raise error(b"libraw says no")

    monkeypatch.setattr(raw_module.rawpy, "imread", failing)
    with pytest.raises(DecodeError) as caught:
        load_image_bytes(b"II*\x00 anything", "x.arw", max_pixels=LIMIT)
    assert caught.value.reason.startswith("cannot read RAW file")
    assert (
        caught.value.reason.endswith("libraw says no)") or "libraw says no" in caught.value.reason
    )
    assert isinstance(caught.value.__cause__, error)
    if error is rawpy.LibRawFileUnsupportedError:
        assert isinstance(caught.value, UnsupportedImageError)
    if error is rawpy.LibRawTooBigError:
        assert isinstance(caught.value, ImageTooLargeError)


def test_discovery_takes_raw_files_by_suffix(tmp_path: Path) -> None:
    names = [f"shot{suffix}" for suffix in sorted(RAW_SUFFIXES)] + ["UPPER.NEF", "notes.txt"]
    for name in names:
        (tmp_path / name).write_bytes(b"not sniffable")
    found = {f.path.name: f.problem for f in discover([tmp_path])}
    assert found == {name: None for name in names if name != "notes.txt"}


def test_a_raw_is_stored_and_found_by_its_phash_and_a_bad_one_fails_alone(
    make_store: StoreFactory, tmp_path: Path
) -> None:
    store = make_store(clip_model=None, clip_dim=None)
    raw_path = tmp_path / "DSC_0001.NEF"
    raw_path.write_bytes(make_dng(PICTURE, orientation=6, exif=RawExif(taken=datetime(2022, 1, 2))))
    other = tmp_path / "other.jpg"
    make_photo_like(11, (320, 240)).save(other, quality=90)
    bad = tmp_path / "broken.dng"
    bad.write_bytes(os.urandom(4096))
    paths = [str(raw_path), str(other), str(bad)]

    outcome = ingest_paths(
        store, None, paths, locks=ProcessLocks(), policy=MatchPolicy(8, 0.95), max_pixels=LIMIT
    )
    assert [f.path for f in outcome.failures] == [str(bad)]
    assert "cannot read RAW file" in outcome.failures[0].error
    by_path = {p: r for r in store.iterate() for p in r.all_paths}
    assert sorted(by_path) == sorted(paths[:2])
    stored = by_path[str(raw_path)]
    assert (stored.format, stored.width, stored.height) == ("NEF", 240, 320)

    query = load_image(tmp_path / "DSC_0001.NEF", max_pixels=LIMIT, draft_size=(32, 32))
    hits = store.search_phash([phash(query.image)], 8, "", 10)
    assert [hit.record.id for hit in hits] == [stored.id]
    jpeg_of_shot = tmp_path / "DSC_0001.JPG"
    _upright(6).save(jpeg_of_shot, quality=90)
    by_jpeg = load_image(jpeg_of_shot, max_pixels=LIMIT, draft_size=(32, 32))
    assert stored.id in {
        hit.record.id for hit in store.search_phash([phash(by_jpeg.image)], 8, "", 10)
    }


def test_a_truncated_raw_with_an_intact_preview_decodes_from_the_preview() -> None:
    whole = make_dng(PICTURE, preview="jpeg")
    loaded = load_image_bytes(whole[: len(whole) // 2], "cut.dng", max_pixels=LIMIT)
    assert loaded.image.size == PICTURE.size  # documented: the sensor data is not read
