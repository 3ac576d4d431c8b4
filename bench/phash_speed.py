"""pHash from image files: lookalike's decode + hash path against plain imagehash.

    python -m bench.phash_speed                          # ~300 generated JPEG photos
    python -m bench.phash_speed --images ../shared/data/ukbench1000
    python -m bench.phash_speed --generate 5 --no-write  # smoke run

Three passes over the same files, single process, after one warm-up call each:
(a) ``imagehash.phash(Image.open(path))``, what a user writes; (b) ``load_image`` with a JPEG
draft + our ``phash``; (c) ``load_image`` at full resolution + our ``phash``. Also reports how
many bits the draft changes against the full decode.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from bench import _report
from bench._report import markdown_table
from services.decode import load_image
from services.errors import DecodeError
from services.hashing import hamming, phash

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
SIZES = [(1024, 768), (1600, 1200), (2048, 1536), (3000, 2000), (1200, 1600)]
MAX_PIXELS = 100_000_000
# Smallest size the hash needs is its 32x32 thumbnail; the draft keeps the decode at least this big.
DRAFT_SIZE = (32, 32)


def generate_photos(folder: Path, count: int) -> list[Path]:
    """Write ``count`` photo-like JPEGs (smooth colour fields, shapes, noise) at camera sizes."""
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
        field = np.asarray(
            Image.fromarray(coarse, "RGB").resize((width, height), Image.Resampling.BICUBIC)
        )
        noise = rng.normal(0.0, 6.0, size=(height, width, 1))
        pixels = np.clip(field + noise, 0, 255).astype(np.uint8)
        path = folder / f"photo_{index:04d}.jpg"
        Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def imagehash_phash(path: Path) -> bytes:
    with Image.open(path) as image:
        return bytes.fromhex(str(imagehash.phash(image)))


def ours_draft(path: Path) -> bytes:
    return phash(load_image(path, max_pixels=MAX_PIXELS, draft_size=DRAFT_SIZE).image)


def draft_decode_only(path: Path) -> bytes:
    """The floor for (b): libjpeg's scaled decode alone, no normalisation and no hash."""
    with Image.open(path) as image:
        image.draft(None, DRAFT_SIZE)
        image.load()
    return b""


def ours_full(path: Path) -> bytes:
    return phash(load_image(path, max_pixels=MAX_PIXELS).image)


def timed(method: Callable[[Path], bytes], paths: Sequence[Path]) -> tuple[float, list[bytes]]:
    """Images per second of ``method`` over ``paths`` (after one warm-up call), and its hashes."""
    method(paths[0])
    start = time.perf_counter()
    hashes = [method(path) for path in paths]
    return len(paths) / (time.perf_counter() - start), hashes


def best_of(
    repeat: int, methods: Sequence[Callable[[Path], bytes]], paths: Sequence[Path]
) -> list[tuple[float, list[bytes]]]:
    """Best rate of each method over ``repeat`` interleaved rounds (other load only slows a run)."""
    best: list[tuple[float, list[bytes]]] = [(0.0, []) for _ in methods]
    for _ in range(repeat):
        for index, method in enumerate(methods):
            rate, hashes = timed(method, paths)
            if rate > best[index][0]:
                best[index] = (rate, hashes)
    return best


def run(paths: Sequence[Path], label: str, repeat: int) -> str:
    for path in paths:  # page cache: every pass reads from memory, none pays for the disk
        path.read_bytes()
    timings = best_of(repeat, [imagehash_phash, ours_draft, ours_full, draft_decode_only], paths)
    (baseline_rate, baseline), (draft_rate, drafted), (full_rate, full) = timings[:3]
    floor_rate = timings[3][0]
    draft_bits = [hamming(a, b) for a, b in zip(drafted, full, strict=True)]
    equal_full = sum(a == b for a, b in zip(full, baseline, strict=True))
    sizes = set()
    for path in paths[:50]:
        with Image.open(path) as image:
            sizes.add(image.size)
    size_text = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4]) + (
        ", ..." if len(sizes) > 4 else ""
    )
    rows = [
        ["(a) imagehash.phash(Image.open(path))", f"{baseline_rate:.0f}", "1.00x"],
        [
            f"(b) load_image(draft_size={DRAFT_SIZE}) + phash",
            f"{draft_rate:.0f}",
            f"{draft_rate / baseline_rate:.2f}x",
        ],
        [
            "(c) load_image (full decode) + phash",
            f"{full_rate:.0f}",
            f"{full_rate / baseline_rate:.2f}x",
        ],
        [
            "(d) floor of (b): Image.open + draft + load only, no hash",
            f"{floor_rate:.0f}",
            f"{floor_rate / baseline_rate:.2f}x",
        ],
    ]
    return (
        f"**{label}**: {len(paths)} files ({size_text}); best of {repeat} rounds.\n\n"
        + markdown_table(["method", "images/s", "vs imagehash"], rows)
        + "\n\n"
        f"- Draft vs full decode, Hamming distance of the pHash: mean "
        f"{statistics.fmean(draft_bits):.2f} bits, max {max(draft_bits)} bits; identical for "
        f"{100 * draft_bits.count(0) / len(draft_bits):.1f}% of images.\n"
        f"- (b) runs at {100 * draft_rate / floor_rate:.0f}% of its floor (d).\n"
        f"- Full decode (c) equals imagehash (a) bit for bit on {equal_full}/{len(paths)} files.\n"
    )


def list_images(folder: Path, limit: int | None) -> tuple[list[Path], list[str]]:
    """Image files under ``folder`` that both paths decode, and why the others were skipped."""
    candidates = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES
    )
    paths, skipped = [], []
    for path in candidates[:limit] if limit else candidates:
        try:
            ours_full(path)
            imagehash_phash(path)
        except (DecodeError, OSError) as exc:  # corrupt test files: neither path is timed on them
            skipped.append(f"{path.name} ({exc})")
        else:
            paths.append(path)
    return paths, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.phash_speed", description=__doc__)
    parser.add_argument("--images", type=Path, action="append", help="folder of images (repeat)")
    parser.add_argument("--limit", type=int, default=None, help="at most this many files each")
    parser.add_argument("--generate", type=int, default=None, help="generate N JPEG photos")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs alone")
    args = parser.parse_args(argv)
    sections = []
    for folder in args.images or []:
        paths, skipped = list_images(folder, args.limit)
        if not paths:
            print(f"no images under {folder}", file=sys.stderr)
            return 2
        section = run(paths, f"`{folder.name}`", args.repeat)
        if skipped:
            section += (
                f"- Skipped {len(skipped)} file(s) that do not decode: {'; '.join(skipped)}\n"
            )
        sections.append(section)
    if args.generate is not None or not args.images:
        count = args.generate if args.generate is not None else 300
        with tempfile.TemporaryDirectory(prefix="phash-bench-") as tmp:
            paths = generate_photos(Path(tmp), count)
            sections.append(run(paths, "generated photo-like JPEGs (quality 90)", args.repeat))
    body = "\n".join(sections)
    print(body)
    if not args.no_write:
        _report.write_section(
            "phash_speed",
            "pHash from files: lookalike vs imagehash",
            body,
            packages=["pillow", "imagehash", "numpy"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
