"""ClipEmbedder on a tiny random CLIP saved to disk and loaded through from_pretrained."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel

from services.embed import (
    ClipEmbedder,
    Embedder,
    ImagePreprocessing,
    _normalised,
    bf16_supported,
    clear_model_cache,
    create_embedder,
)
from services.errors import ModelError
from services.settings import Settings
from testkit.tinyclip import build_tiny_clip

DIM = 32


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tinyclip"), dim=DIM)


@pytest.fixture(scope="module")
def fp32(tiny_dir: Path) -> ClipEmbedder:
    return ClipEmbedder.load(str(tiny_dir), device="cpu", precision="fp32", batch_size=2)


@pytest.fixture(scope="module")
def bf16(tiny_dir: Path) -> ClipEmbedder:
    return ClipEmbedder.load(str(tiny_dir), device="cpu", precision="bf16", batch_size=2)


def photos(count: int = 5) -> list[Image.Image]:
    """Smooth random images of assorted sizes and aspect ratios."""
    rng = np.random.default_rng(7)
    sizes = [(64, 48), (48, 64), (40, 40), (97, 31), (33, 120), (200, 150)]
    images = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BILINEAR)
        noise = rng.integers(-20, 20, (height, width, 3))
        images.append(Image.fromarray(np.clip(np.asarray(image) + noise, 0, 255).astype(np.uint8)))
    return images


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    result: np.ndarray = np.sum(a * b, axis=1) / (
        np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    )
    return result


def test_is_an_embedder(fp32: ClipEmbedder, tiny_dir: Path) -> None:
    embedder: Embedder = fp32
    assert embedder.dim == DIM
    assert embedder.model_id == str(tiny_dir)
    assert fp32.precision == "fp32"
    assert fp32.device == "cpu"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_image_embeddings_are_unit_float32_rows(
    precision: str, request: pytest.FixtureRequest
) -> None:
    embedder: ClipEmbedder = request.getfixturevalue(precision)
    vectors = embedder.embed_images(photos(5))
    assert vectors.shape == (5, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(vectors).all()


def test_empty_inputs_give_empty_arrays(fp32: ClipEmbedder) -> None:
    assert fp32.embed_images([]).shape == (0, DIM)
    assert fp32.embed_texts([]).shape == (0, DIM)
    assert fp32.embed_images([]).dtype == np.float32


def test_same_image_gives_the_same_vector(fp32: ClipEmbedder) -> None:
    image = photos(1)[0]
    np.testing.assert_array_equal(fp32.embed_images([image]), fp32.embed_images([image.copy()]))
    # within one batch, GEMM blocking may change the last bit between rows
    twice = fp32.embed_images([image, image.copy()])
    np.testing.assert_allclose(twice[0], twice[1], atol=1e-6)


def test_different_images_give_different_vectors(fp32: ClipEmbedder) -> None:
    vectors = fp32.embed_images(photos(3))
    assert not np.allclose(vectors[0], vectors[1])


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_equals_one_by_one(precision: str, request: pytest.FixtureRequest) -> None:
    embedder: ClipEmbedder = request.getfixturevalue(precision)
    images = photos(5)  # batch_size 2: batches of 2, 2 and 1
    batched = embedder.embed_images(images)
    single = np.concatenate([embedder.embed_images([image]) for image in images])
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    np.testing.assert_allclose(batched, single, atol=tolerance)


def test_non_rgb_images_are_converted(fp32: ClipEmbedder) -> None:
    image = photos(1)[0]
    grey = image.convert("L")
    rgba = image.convert("RGBA")
    vectors = fp32.embed_images([grey, rgba, image])
    np.testing.assert_allclose(vectors[1], vectors[2], atol=1e-6)
    assert vectors[0].shape == (DIM,)


def test_bf16_matches_fp32(fp32: ClipEmbedder, bf16: ClipEmbedder, tiny_dir: Path) -> None:
    images = photos(6)
    texts = ["a photo of a cat", "a red car"]
    assert bf16.precision == "bf16"
    assert cosines(bf16.embed_images(images), fp32.embed_images(images)).min() > 0.99
    assert cosines(bf16.embed_texts(texts), fp32.embed_texts(texts)).min() > 0.99
    autocast = ClipEmbedder.load(str(tiny_dir), precision="bf16", bf16_strategy="autocast")
    assert cosines(autocast.embed_images(images), fp32.embed_images(images)).min() > 0.99


def test_text_embeddings(fp32: ClipEmbedder) -> None:
    texts = ["a photo of a cat", "a photo of a dog on the grass", "zebra " * 40]  # last: truncated
    vectors = fp32.embed_texts(texts)
    assert vectors.shape == (3, DIM)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # padding inside a batch does not change a text's vector
    np.testing.assert_allclose(fp32.embed_texts(texts[:1])[0], vectors[0], atol=1e-5)
    assert not np.allclose(vectors[0], vectors[1])


def test_zero_vectors_stay_finite() -> None:
    rows = _normalised(torch.tensor([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(rows, [[0.0, 0.0], [0.6, 0.8]], atol=1e-6)


@pytest.mark.parametrize(
    "processor",
    [
        pytest.param(None, id="tiny-model-processor"),
        # openai/clip-vit-base-patch32's settings: 224, bicubic, CLIP mean/std
        pytest.param(CLIPImageProcessor(), id="clip-defaults"),
    ],
)
def test_preprocessing_matches_clip_image_processor(
    processor: CLIPImageProcessor | None, tiny_dir: Path
) -> None:
    processor = processor or CLIPImageProcessor.from_pretrained(tiny_dir)
    images = [*photos(6), photos(1)[0].convert("L")]
    expected = processor(images=images, return_tensors="np")["pixel_values"]
    actual = ImagePreprocessing.from_processor(processor)(images)
    assert actual.shape == expected.shape
    assert actual.dtype == np.float32
    assert np.abs(actual - expected).max() < 1e-4


def test_preprocessing_reads_the_processor_config() -> None:
    processor = CLIPImageProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    steps = ImagePreprocessing.from_processor(processor)
    assert steps.mean == (0.5, 0.5, 0.5)
    assert steps.std == (0.25, 0.25, 0.25)
    white = Image.new("RGB", (300, 250), (255, 255, 255))
    np.testing.assert_allclose(steps([white]), 2.0, atol=1e-5)  # (1 - 0.5) / 0.25


def test_model_is_loaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = str(build_tiny_clip(tmp_path / "clip", dim=DIM))
    calls: list[object] = []
    original: Callable[..., object] = CLIPModel.from_pretrained

    def counting(*args: object, **kwargs: object) -> object:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(CLIPModel, "from_pretrained", counting)
    first = ClipEmbedder.load(directory, precision="fp32", batch_size=4)
    second = ClipEmbedder.load(directory, precision="fp32", batch_size=8)
    assert first.model is second.model
    assert len(calls) == 1
    assert second.batch_size == 8
    clear_model_cache()
    third = ClipEmbedder.load(directory, precision="fp32")
    assert third.model is not first.model
    assert len(calls) == 2


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as caught:
        ClipEmbedder.load(str(tmp_path / "no-such-model"))
    assert "LOOKALIKE_CLIP_MODEL" in str(caught.value)
    assert "LOOKALIKE_CLIP_MODEL=none" in str(caught.value)


def test_directory_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="LOOKALIKE_CLIP_MODEL=none") as caught:
        ClipEmbedder.load(str(tmp_path))
    assert str(tmp_path) in str(caught.value)


def test_unknown_hub_id_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="LOOKALIKE_CLIP_MODEL") as caught:
        ClipEmbedder.load("no-such-org/no-such-clip-model")
    message = str(caught.value)
    assert "no-such-org/no-such-clip-model" in message
    assert "HF_HUB_OFFLINE" in message
    assert "=none" in message


def test_unknown_hub_id_without_network_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr("services.embed._reachable", lambda url, timeout_s=5.0: False)
    with pytest.raises(ModelError, match="cannot be reached") as caught:
        ClipEmbedder.load("no-such-org/no-such-clip-model")
    assert "LOOKALIKE_CLIP_MODEL=none" in str(caught.value)


def test_create_embedder_hash_only() -> None:
    assert create_embedder(Settings.from_env({"LOOKALIKE_CLIP_MODEL": "none"})) is None


def test_create_embedder_clip(tiny_dir: Path) -> None:
    settings = Settings.from_env(
        {
            "LOOKALIKE_CLIP_MODEL": str(tiny_dir),
            "LOOKALIKE_CLIP_PRECISION": "fp32",
            "LOOKALIKE_CLIP_BATCH_SIZE": "3",
        }
    )
    embedder = create_embedder(settings)
    assert isinstance(embedder, ClipEmbedder)
    assert (embedder.precision, embedder.batch_size, embedder.dim) == ("fp32", 3, DIM)


def test_auto_precision_follows_the_device(tiny_dir: Path) -> None:
    embedder = ClipEmbedder.load(str(tiny_dir), device="cpu")
    assert embedder.precision == ("bf16" if bf16_supported("cpu") else "fp32")
    assert bf16_supported("mps") is False


def test_import_is_cheap() -> None:
    code = (
        "import sys, services.embed; print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "False"]
