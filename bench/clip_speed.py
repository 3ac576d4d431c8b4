"""CLIP ViT-B/32 embedding speed on this machine: decoded images in, unit vectors out.

The architecture is the real ViT-B/32 with random weights (no network needed), saved to a temporary
directory and loaded through ``ClipEmbedder.load`` so that the production path is what is timed:
batched PIL/numpy preprocessing, forward pass, normalisation. bf16 and fp32 run side by side.

    python -m bench.clip_speed --images ../shared/data/ukbench1000 --n 256
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from PIL import Image

from bench import _report
from services.embed import ClipEmbedder, bf16_supported, clear_model_cache

TARGET_IMAGES_PER_S = 70.0
T = TypeVar("T")
_QUERIES = [
    "a photo of a cat",
    "a red car parked in the street at night",
    "two people walking on a beach at sunset",
    "a bowl of fruit on a wooden table",
    "snowy mountains above a lake",
    "an old black and white portrait of a man with a hat",
    "the cover of a music CD",
    "a dog",
]


def build_vit_b32(directory: Path) -> Path:
    """Save a randomly initialised CLIP ViT-B/32 (+ a small tokenizer, CLIP's processor)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from testkit.tinyclip import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = CLIPConfig(  # type: ignore[no-untyped-call]
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 512,
            "intermediate_size": 2048,
            "num_hidden_layers": 12,
            "num_attention_heads": 8,
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "image_size": 224,
            "patch_size": 32,
        },
        projection_dim=512,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    CLIPImageProcessor().save_pretrained(directory)  # the defaults are openai's ViT-B/32 settings
    return directory


def load_images(folder: Path | None, count: int) -> list[Image.Image]:
    """Decode ``count`` images from ``folder`` (sorted, cycled if short), or synthesise 640x480."""
    if folder is None:
        rng = np.random.default_rng(0)
        images = []
        for _ in range(count):
            coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            images.append(Image.fromarray(coarse).resize((640, 480), Image.Resampling.BICUBIC))
        return images
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no .jpg/.png images in {folder}")
    decoded = []
    for path in files[:count]:
        with Image.open(path) as image:
            decoded.append(image.convert("RGB"))
    return [decoded[i % len(decoded)] for i in range(count)]


def timed(run: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def vision_gflop_per_image(config: Any) -> float:
    """Multiply-adds x2 of the vision tower's matrix products for one image."""
    vision = config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 + 1
    hidden, mlp = vision.hidden_size, vision.intermediate_size
    per_layer = 2 * tokens * (4 * hidden * hidden + 2 * hidden * mlp) + 4 * tokens * tokens * hidden
    patches = 2 * (tokens - 1) * 3 * vision.patch_size**2 * hidden
    projection = 2 * hidden * config.projection_dim
    return float(vision.num_hidden_layers * per_layer + patches + projection) / 1e9


def matmul_gflops(bf16: bool) -> float:
    """This machine's bf16 (or fp32) GEMM throughput on ViT-B-sized operands."""
    import torch

    dtype = torch.bfloat16 if bf16 else torch.float32
    a, b = torch.randn(1600, 768, dtype=dtype), torch.randn(768, 3072, dtype=dtype)
    with torch.inference_mode():
        for _ in range(3):
            a @ b
        seconds, _ = timed(lambda: [a @ b for _ in range(20)])
    return float(20 * 2 * 1600 * 768 * 3072 / seconds / 1e9)


def bench_images(
    embedder: ClipEmbedder, images: Sequence[Image.Image], repeat: int
) -> tuple[float, np.ndarray]:
    """Best images/s of ``repeat`` passes (other load on the machine only ever slows a pass)."""
    embedder.embed_images(images[: embedder.batch_size])  # warm-up batch
    passes = [timed(lambda: embedder.embed_images(images)) for _ in range(repeat)]
    return len(images) / min(seconds for seconds, _ in passes), passes[0][1]


def best_rate(count: int, run: Callable[[], object], repeat: int) -> float:
    return count / min(timed(run)[0] for _ in range(repeat))


def bench_compiled(embedder: ClipEmbedder, images: Sequence[Image.Image]) -> float:
    """images/s with the vision tower under torch.compile (inductor, frozen weights)."""
    import torch
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    model = embedder.model
    compiled: Any = torch.compile(model.vision_model)
    batch = embedder.batch_size

    def embed(chunk: Sequence[Image.Image]) -> np.ndarray:
        pixels = torch.from_numpy(embedder.preprocess(chunk)).to(torch.bfloat16)
        with torch.inference_mode():
            pooled = compiled(pixel_values=pixels).pooler_output
            features = model.visual_projection(pooled).float()
        return torch.nn.functional.normalize(features, dim=-1).numpy()

    def run() -> list[np.ndarray]:
        return [embed(images[i : i + batch]) for i in range(0, len(images), batch)]

    embed(images[:batch])  # compiles
    seconds, _ = timed(run)
    return len(images) / seconds


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, help="folder of images (default: synthetic)")
    parser.add_argument("--n", type=int, default=256, help="images to embed per configuration")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=2, help="timed passes; the best counts")
    parser.add_argument(
        "--texts", type=int, default=256, help="short text queries to embed per configuration"
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)

    load_start = os.getloadavg()[0]
    seconds, images = timed(lambda: load_images(args.images, args.n))
    source = f"{args.n} images from {args.images}" if args.images else f"{args.n} synthetic"
    print(f"decoded {source} in {seconds:.1f} s; torch threads: {torch.get_num_threads()}")
    native_bf16 = bf16_supported("cpu")
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="clip-vit-b32-") as tmp:
        directory = str(build_vit_b32(Path(tmp)))
        bs = args.batch_size
        configs: list[tuple[str, Literal["bf16", "fp32"], Literal["cast", "autocast"], int]] = [
            ("fp32", "fp32", "cast", bs),
            ("bf16, weights cast", "bf16", "cast", bs),
            ("bf16, autocast", "bf16", "autocast", bs),
            ("bf16, weights cast", "bf16", "cast", bs * 2),
        ]
        reference: np.ndarray | None = None
        results: dict[str, float] = {}
        for label, precision, strategy, batch_size in configs:
            clear_model_cache()
            embedder = ClipEmbedder.load(
                directory,
                device="cpu",
                precision=precision,
                bf16_strategy=strategy,
                batch_size=batch_size,
            )
            rate, vectors = bench_images(embedder, images, args.repeat)
            reference = vectors if reference is None else reference
            cosine = float(np.min(np.sum(vectors * reference, axis=1)))
            texts = [_QUERIES[i % len(_QUERIES)] for i in range(args.texts)]
            text_rate = best_rate(len(texts), functools.partial(embedder.embed_texts, texts), 2)
            attention = embedder.model.config._attn_implementation
            results[f"{label}/{batch_size}"] = rate
            rows.append(
                [label, batch_size, attention, f"{rate:.1f}", f"{1000 / rate:.1f}",
                 f"{cosine:.5f}", f"{text_rate:.0f}"]
            )  # fmt: skip
            print(rows[-1], flush=True)
        if args.compile:
            clear_model_cache()
            embedder = ClipEmbedder.load(directory, device="cpu", precision="bf16", batch_size=bs)
            rate = bench_compiled(embedder, images)
            results["compiled"] = rate
            rows.append(["bf16 cast + torch.compile", bs, "sdpa", f"{rate:.1f}",
                         f"{1000 / rate:.1f}", "n/a", "n/a"])  # fmt: skip
            print(rows[-1], flush=True)
        gflop = vision_gflop_per_image(embedder.model.config)
        clear_model_cache()

    pre_rate = best_rate(len(images), lambda: embedder.preprocess(images), args.repeat)
    best_bf16 = max(v for k, v in results.items() if k.startswith("bf16") or k == "compiled")
    bf16_default = results[f"bf16, weights cast/{args.batch_size}"]
    share = (1 / pre_rate) / (1 / bf16_default)
    peak_bf16, peak_fp32 = matmul_gflops(bf16=True), matmul_gflops(bf16=False)
    header = ["Mode", "Batch", "Attention", "images/s", "ms/image", "min cos vs fp32", "texts/s"]
    verdict = "met" if best_bf16 >= TARGET_IMAGES_PER_S else "**not met**"
    cast_rate = results[f"bf16, weights cast/{args.batch_size}"]
    autocast_rate = results[f"bf16, autocast/{args.batch_size}"]
    facts = [
        f"Preprocessing alone (PIL + numpy): {pre_rate:.0f} images/s, {100 * share:.0f}% of the "
        f"time of the default bf16 path (weights cast, batch {args.batch_size}).",
        f"Best bf16: {best_bf16:.1f} images/s; target {TARGET_IMAGES_PER_S:.0f}: {verdict}.",
        f"Vision tower: {gflop:.1f} GFLOP per image; the best bf16 row sustains "
        f"{best_bf16 * gflop:.0f} GFLOP/s; the target needs {TARGET_IMAGES_PER_S * gflop:.0f}.",
        f"Bare GEMM of ViT-B shape (1600x768 @ 768x3072): {peak_bf16:.0f} GFLOP/s in bf16, "
        f"{peak_fp32:.0f} in fp32.",
        f"bf16 at batch {args.batch_size}: {cast_rate:.1f} images/s with the weights cast, "
        f"{autocast_rate:.1f} under autocast.",
    ]
    body = (
        f"{source}; best of {args.repeat} passes; texts/s over {args.texts} short "
        f"queries. Native bf16: {native_bf16}; torch threads: {torch.get_num_threads()}; load "
        f"average (1 min) {load_start:.1f} before, {os.getloadavg()[0]:.1f} after.\n\n"
        + _report.markdown_table(header, rows)
        + "\n\n"
        + "\n".join(f"- {fact}" for fact in facts)
        + "\n"
    )
    print(body)
    if not args.no_write:
        _report.write_section(
            "clip_speed",
            "CLIP ViT-B/32 image embedding on CPU",
            body,
            packages=["torch", "transformers"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
