"""services.signals: an app's query signals equal what ingestion stored, and the search an app
runs with plain pymilvus (as in docs/apps.md) finds a row and its mirrored copy."""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from services.embed import ClipEmbedder
from services.errors import DecodeError, QueryError
from services.pipeline import analyze_batch
from services.signals import (
    clip_search_params,
    frame_signals,
    phash_search_params,
    query_signals,
    stored_variants,
)
from testkit.imagegen import make_photo_like
from tests.conftest import StoreFactory


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def embedder(tiny_clip_dir: Path) -> ClipEmbedder:
    return ClipEmbedder.load(str(tiny_clip_dir), device="cpu", precision="fp32", batch_size=4)


def test_signals_equal_what_ingestion_stores(tmp_path: Path, embedder: ClipEmbedder) -> None:
    image = make_photo_like(3)
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(image))
    stored = analyze_batch([path], embedder, max_pixels=10**8).records[0]
    signals = query_signals(path.read_bytes(), embedder=embedder)
    assert signals.phash_variants is not None and signals.clip is not None
    assert signals.phash_variants[0] == stored.phash
    assert signals.phash_variants[0].hex() == str(imagehash.phash(image))
    assert signals.phash_variants[1:] == stored.phash_dihedral
    assert stored.clip is not None
    np.testing.assert_allclose(signals.clip, stored.clip, atol=1e-6)


def test_hash_only_signals_and_bad_bytes() -> None:
    signals = query_signals(png_bytes(make_photo_like(4)))
    assert signals.clip is None and signals.phash_variants and len(signals.phash_variants) == 8
    with pytest.raises(DecodeError, match=r"upload\.jpg"):
        query_signals(b"not an image", name="upload.jpg")


def test_stored_variants_of_a_row() -> None:
    image = make_photo_like(5)
    signals = query_signals(png_bytes(image))
    assert signals.phash_variants is not None
    row = {
        "id": "x",
        "phash": [signals.phash_variants[0]],
        "phash_dihedral": "".join(v.hex() for v in signals.phash_variants[1:]),
    }
    assert stored_variants(row) == signals.phash_variants
    with pytest.raises(QueryError, match="phash_dihedral"):
        stored_variants({"id": "x", "phash": signals.phash_variants[0]})


def test_search_params() -> None:
    assert phash_search_params(8) == {"metric_type": "HAMMING", "params": {"radius": 9}}
    assert clip_search_params(100)["metric_type"] == "COSINE"
    with pytest.raises(QueryError):
        phash_search_params(64)


@pytest.mark.integration
def test_an_app_finds_a_mirrored_copy_with_plain_pymilvus(
    tmp_path: Path, make_store: StoreFactory, milvus_uri: str
) -> None:
    from pymilvus import MilvusClient

    original, other = make_photo_like(11), make_photo_like(12)
    for name, image in (("original.png", original), ("other.png", other)):
        (tmp_path / name).write_bytes(png_bytes(image))
    records = analyze_batch(sorted(tmp_path.iterdir()), None, max_pixels=10**8).records
    store = make_store(clip_model=None, clip_dim=None)
    store.upsert(records)
    by_name = {Path(r.path).name: r for r in records}

    client = MilvusClient(uri=milvus_uri, dedicated=True)  # as an app: its own channel
    try:
        # By stored id: the row's own hashes, flips and rotations included.
        row = client.get(
            store.collection,
            ids=[by_name["original.png"].id],
            output_fields=["phash", "phash_dihedral"],
        )[0]
        hits = client.search(
            store.collection,
            data=list(stored_variants(row)),
            anns_field="phash",
            search_params=phash_search_params(8),
            limit=10,
            output_fields=["path"],
        )
        assert by_name["original.png"].id in {h["id"] for group in hits for h in group}
        # By an uploaded image: a mirrored copy finds the original through the variants.
        upload = query_signals(png_bytes(ImageOps.mirror(original)))
        assert upload.phash_variants is not None
        hits = client.search(
            store.collection,
            data=list(upload.phash_variants),
            anns_field="phash",
            search_params=phash_search_params(8),
            limit=10,
            output_fields=["path"],
        )
        found = {h["entity"]["path"] for group in hits for h in group}
        assert str(tmp_path / "original.png") in found
        assert str(tmp_path / "other.png") not in found
    finally:
        client.close()


def test_the_recipe_in_docs_apps_gives_the_same_hashes() -> None:
    """docs/apps.md, "Computing it yourself": imagehash of each transposed image, MSB first."""
    data = png_bytes(make_photo_like(7))
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")

    def phash_bytes(img: Image.Image) -> bytes:
        return np.packbits(imagehash.phash(img).hash.flatten()).tobytes()

    turns = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    recipe = [phash_bytes(image), phash_bytes(mirrored)]
    recipe += [phash_bytes(image.transpose(t)) for t in turns]
    recipe += [phash_bytes(mirrored.transpose(t)) for t in turns]
    signals = query_signals(data)
    assert signals.phash_variants is not None
    distances = [
        bin(int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).count("1")
        for a, b in zip(recipe, signals.phash_variants, strict=True)
    ]
    assert distances[0] == 0 and max(distances) <= 2, distances


def test_frame_signals_equal_what_ingestion_stores(tmp_path: Path, embedder: ClipEmbedder) -> None:
    # A JPEG large enough that the decode scale of a CLIP collection differs from a hash-only one.
    path = tmp_path / "photo.jpg"
    canvas = Image.new("RGB", (640, 600), (250, 250, 250))
    canvas.paste(make_photo_like(8, (640, 480)), (0, 60))
    canvas.save(path, quality=90)
    for model, clip in ((embedder, True), (None, False)):
        stored = analyze_batch([path], model, max_pixels=10**8)
        record, queries = stored.records[0], stored.frame_queries[0]
        signals = frame_signals(path.read_bytes(), clip=clip)
        assert record.frames is not None and not record.frames.box.whole
        assert signals.phash == record.phash
        assert signals.frame_codes == record.frames.to_hex()
        assert record.patches is not None and signals.patch_codes == record.patches.to_hex()
        assert list(signals.queries) == queries  # what dedup on arrival searches with


def _doc_blocks(section: str) -> list[str]:
    """The python code blocks of one section of docs/apps.md, in order."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "apps.md").read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return [part.split("```", 1)[0] for part in body.split("```python\n")[1:]]


@pytest.mark.integration
def test_the_reframed_copies_samples_in_docs_apps(
    tmp_path: Path, make_store: StoreFactory, milvus_uri: str
) -> None:
    """docs/apps.md, "Copies that change the frame", run as written against a real server."""
    from pymilvus import MilvusClient

    photo, other, unrelated = (make_photo_like(seed, (400, 300)) for seed in (21, 22, 23))

    def boxed(image: Image.Image) -> Image.Image:
        canvas = Image.new("RGB", (400, 400), (0, 0, 0))
        canvas.paste(image, (0, 50))
        return canvas

    images = {
        "photo.png": photo,
        "crop.png": photo.crop((40, 30, 360, 270)),  # its centred 80% window
        "boxed.png": boxed(photo),
        "other.png": other,
        "unrelated.png": unrelated,
    }
    for name, image in images.items():
        (tmp_path / name).write_bytes(png_bytes(image))
    records = analyze_batch(sorted(tmp_path.iterdir()), None, max_pixels=10**8).records
    store = make_store(clip_model=None, clip_dim=None)
    store.upsert(records)
    blocks = _doc_blocks("Copies that change the frame")
    assert len(blocks) == 2

    def run(upload: Image.Image) -> dict[str, object]:
        client = MilvusClient(uri=milvus_uri, dedicated=True)  # as an app: its own channel
        namespace: dict[str, object] = {
            "client": client,
            "COLLECTION": store.collection,
            "clip_model": None,
            "uploaded_bytes": png_bytes(upload),
        }
        try:
            for block in blocks:
                exec(compile(block, "docs/apps.md", "exec"), namespace)
        finally:
            client.close()
        return namespace

    def names(found: object) -> set[str]:
        assert isinstance(found, dict)
        return {Path(path).name for path in found.values()}

    the_photo = run(photo)
    # Milvus alone finds the crop (its pHash meets the photo's 80% window), not the boxed copy.
    assert names(the_photo["reframed_by_milvus"]) == {"crop.png"}
    # Compared in-process, the stored frame codes find the boxed copy too.
    assert names(the_photo["reframed_in_process"]) == {"photo.png", "crop.png", "boxed.png"}
    # A boxed upload finds its original with Milvus alone (its content region's code).
    assert "other.png" in names(run(boxed(other))["reframed_by_milvus"])


@pytest.mark.integration
def test_the_patch_codes_sample_in_docs_apps(
    tmp_path: Path, make_store: StoreFactory, milvus_uri: str
) -> None:
    """docs/apps.md, "Off-centre crops: patch codes", run as written against a real server: an
    upload finds its off-centre crop (and itself), not another photo."""
    from pymilvus import MilvusClient

    from testkit.imagegen import sample_photos

    photos = sample_photos(("coffee", "chelsea"))
    coffee = photos["coffee"].convert("RGB")
    w, h = coffee.size
    crop = coffee.crop((round(0.02 * w), round(0.2 * h), round(0.8 * w), round(0.98 * h)))
    images = {"coffee.png": coffee, "crop.png": crop, "cat.png": photos["chelsea"].convert("RGB")}
    for name, image in images.items():
        (tmp_path / name).write_bytes(png_bytes(image))
    records = analyze_batch(sorted(tmp_path.iterdir()), None, max_pixels=10**8).records
    store = make_store(clip_model=None, clip_dim=None)
    store.upsert(records)
    [block] = _doc_blocks("Off-centre crops: patch codes")
    client = MilvusClient(uri=milvus_uri, dedicated=True)  # as an app: its own channel
    namespace: dict[str, object] = {
        "client": client,
        "COLLECTION": store.collection,
        "upload": frame_signals(png_bytes(coffee), clip=False),
    }
    try:
        exec(compile(block, "docs/apps.md", "exec"), namespace)
    finally:
        client.close()
    found = namespace["cropped"]
    assert isinstance(found, dict)
    assert {Path(path).name for path in found.values()} == {"coffee.png", "crop.png"}
