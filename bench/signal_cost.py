"""What each hash-only signal costs per image, as ingestion computes it: the decode, the hashes
(pHash with its flips and turns, aHash, dHash, colour hash), the frame codes and the patch codes.

    python -m bench.signal_cost --images ../shared/data/ukbench1000
    python -m bench.signal_cost --generate 20 --no-write   # smoke run

One process, with glibc's allocator set as a worker's (``ingest.malloc``), the files read into
memory first; each stage is timed on its own over every file,
in rounds, and the best round counts (other load only ever slows a run). The stages run in the
order ingestion runs them (``services.pipeline.analyze_batch``), each on the previous stage's
output: the draft decode, ``stored_hashes``, ``frame_codes``, ``patch_codes`` of the content
region. Metadata (EXIF, sha256) and the store are left out: they do not change with the codes.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import _report
from bench.lite_scan_cost import best
from ingest.malloc import keep_freed_memory
from services.decode import load_image_bytes
from services.frames import frame_codes
from services.hashing import stored_hashes
from services.patches import patch_codes
from services.pipeline import HASH_DRAFT_SIZE
from testkit.imagegen import make_photo_like

MAX_PIXELS = 10**8


def measure(blobs: Sequence[bytes], rounds: int) -> list[tuple[str, float]]:
    """Seconds per image of each stage, best of ``rounds``."""
    images = [load_image_bytes(b, "x", max_pixels=MAX_PIXELS, draft_size=HASH_DRAFT_SIZE).image
              for b in blobs]  # fmt: skip
    hashes = [stored_hashes(image)[0].phash for image in images]
    frames = [frame_codes(image, h) for image, h in zip(images, hashes, strict=True)]
    regions = [f.content_region(image) for f, image in zip(frames, images, strict=True)]
    patch_codes(regions[0])  # compile the kernels
    stages: list[tuple[str, Callable[[], Any]]] = [
        ("decode (JPEG draft)", lambda: [
            load_image_bytes(b, "x", max_pixels=MAX_PIXELS, draft_size=HASH_DRAFT_SIZE)
            for b in blobs
        ]),
        ("hashes (pHash + 7 flips/turns, aHash, dHash, colour)",
         lambda: [stored_hashes(image) for image in images]),
        ("frame codes (content region, 3 windows)",
         lambda: [frame_codes(i, h) for i, h in zip(images, hashes, strict=True)]),
        ("patch codes (16 blob patches)", lambda: [patch_codes(r) for r in regions]),
    ]  # fmt: skip
    return [(name, best(run, rounds) / len(blobs)) for name, run in stages]


def report(label: str, blobs: Sequence[bytes], rounds: int) -> str:
    costs = measure(blobs, rounds)
    total = sum(seconds for _, seconds in costs)
    before = total - costs[-1][1]
    rows = [[name, f"{1000 * seconds:.2f}", f"{seconds / total:.0%}"] for name, seconds in costs]
    rows.append(["all", f"{1000 * total:.2f}", "100%"])
    return "\n\n".join(
        [
            f"**{label}**: {len(blobs)} files; best of {rounds} rounds, one process.",
            _report.markdown_table(["stage", "ms per image", "share"], rows),
            f"- The patch codes add {costs[-1][1] / before:.0%} to the signals' CPU time "
            f"({1000 * before:.2f} to {1000 * total:.2f} ms an image): one core computes "
            f"{1 / before:.0f} images/s of signals without them, {1 / total:.0f} with them.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as a worker process runs (ingest.malloc)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, action="append", default=[])
    parser.add_argument("--generate", type=int, default=0, help="generated 1024x768 JPEGs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    parts = []
    for folder in args.images:
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg"})
        parts.append(report(f"`{folder.name}`", [p.read_bytes() for p in files], args.rounds))
    if args.generate or not args.images:
        blobs = []
        for seed in range(args.generate or 20):
            buffer = io.BytesIO()
            make_photo_like(seed, (1024, 768)).save(buffer, "JPEG", quality=90)
            blobs.append(buffer.getvalue())
        parts.append(report("generated photo-like JPEGs (1024x768)", blobs, args.rounds))
    body = "\n\n".join(parts)
    print(body)
    if not args.no_write:
        _report.write_section(
            "signal_cost",
            "What each hash-only signal costs per image",
            body,
            ["pillow", "numpy", "scipy", "numba"],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
