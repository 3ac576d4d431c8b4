"""Would codes of corner-anchored windows find off-centre crops? A measurement for a design not
built (``frame_codes`` holds four codes; more need a new schema version).

On the copy-detection set of ``bench.copy_detection`` (UKBench, same edits, same seed), each
base gets the pHashes of its windows anchored at the four corners at the given scales, hashed
as ``services.frames`` hashes its centred windows (a gray thumbnail of at most 128 pixels a
side, bilinear 32x32). Counted: the off-centre crops whose whole-frame pHash is within the
radius of one of their base's corner windows, and the hard negatives (other views of the
object) for which either image's pHash is within the radius of one of the other's.

    python -m bench.corner_windows                         # scales 0.9, 0.8, 0.75, radius 8
    python -m bench.corner_windows --scales 0.95 0.9 0.85 0.8 0.75 --limit 40
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from bench.copy_detection import DATA, SEEDS, Entry, build_set, ukbench_bases
from services.frames import window_code, window_source
from services.hashing import hamming, hash_input, phash
from services.pipeline import load_for_signals
from services.settings import Settings

OFF_CENTRE = (
    "crop 5% off-centre",
    "crop 10% off-centre",
    "crop 20% off-centre",
    "crop 25% off-centre",
    "crop 10% off-centre + text + resize 50%, JPEG q=60",
)


def corner_codes(image: Image.Image, scales: tuple[float, ...]) -> list[bytes]:
    """The pHashes of the windows anchored at each corner of ``image``, for each scale, hashed
    as services.frames hashes its centred windows."""
    source = window_source(image)
    w, h = source.size
    codes = []
    for scale in scales:
        cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
        for x in (0, w - cw):
            for y in (0, h - ch):
                codes.append(window_code(source, (x, y, x + cw, y + ch)))
    return codes


def measure(
    entries: list[Entry], scales: tuple[float, ...], radius: int
) -> tuple[dict[str, tuple[int, int]], tuple[int, int]]:
    max_pixels = Settings.model_fields["max_image_pixels"].default
    images = {
        e.path: load_for_signals(e.path, max_pixels=max_pixels, embedder=None).image
        for e in entries
    }
    whole = {path: phash(hash_input(image)) for path, image in images.items()}
    corners = {path: corner_codes(image, scales) for path, image in images.items()}
    base = {e.group: e.path for e in entries if not e.transform and "-view" not in e.group}

    def near(a: Path, b: Path) -> bool:
        return min(hamming(whole[a], code) for code in corners[b]) <= radius

    found = {}
    for name in OFF_CENTRE:
        copies = [e for e in entries if e.transform == name]
        found[name] = (sum(near(e.path, base[e.group]) for e in copies), len(copies))
    views = [e for e in entries if "-view" in e.group]
    wrong = 0
    for view in views:
        original = base[view.group.split("-view")[0]]
        wrong += near(view.path, original) or near(original, view.path)
    return found, (wrong, len(views))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DATA)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.9, 0.8, 0.75])
    parser.add_argument("--radius", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None, help="UKBench objects; default all")
    args = parser.parse_args(argv)
    bases = ukbench_bases(args.images if args.images.is_dir() else None, args.limit)
    scales = tuple(args.scales)
    with tempfile.TemporaryDirectory(prefix="corner_windows_") as tmp:
        entries = build_set(bases, SEEDS["ukbench"], Path(tmp))
        found, (wrong, views) = measure(entries, scales, args.radius)
    codes = 4 * len(scales)
    print(f"{len(bases)} bases, {codes} corner windows each {scales}, radius {args.radius}")
    for name, (hit, total) in found.items():
        print(f"  {name}: {hit}/{total} copies within the radius of a corner window")
    print(f"  hard negatives within the radius (either way): {wrong}/{views}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
