"""Copy detection on real photos: lookalike's pHash (+ flips/rotations) beside imagededup's PHash.

    python -m bench.copy_detection                       # ../shared/data/ukbench1000: 250 objects
    python -m bench.copy_detection --limit 8 --no-write  # smoke run

UKBench holds 4 views of each object. View 0 of each object is a base image; each base gets 12
transformed copies (one group: base + copies). Views 1-3 are hard negatives, each its own group:
the same object, photographed again, is not a copy. Without the data folder, generated photo-like
images stand in as bases (no hard negatives). Every image is written to a temporary folder.

lookalike's signals come from the ingestion path (``services.pipeline.load_for_signals`` with no
CLIP model, then ``services.hashing.phash_variants``); the pairs from ``services.evaluation``,
which runs the same ``services.hamming_pairs.pairs_within`` as ``lookalike dedup`` (no Milvus
needed). imagededup's ``PHash.encode_images`` / ``find_duplicates`` run on the same files.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from bench import _report
from bench.dedup_scale import _import_imagededup_phash
from services.evaluation import (
    EvalItem,
    ThresholdResult,
    best_f1,
    evaluate,
    phash_pairs,
    pr_curve_png,
    score_pairs,
)
from services.hashing import phash_variants
from services.pipeline import load_for_signals
from services.settings import Settings

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "ukbench1000"
PNG = Path(__file__).resolve().parent.parent / "docs" / "img" / "copy_detection_pr.png"
DEFAULT_RADIUS = 8  # lookalike dedup's --max-hamming default
IMAGEDEDUP_THRESHOLD = 10  # imagededup's PHash find_duplicates default
RADII = list(range(17))
IDENTITY = "lookalike (pHash, identity only)"
VIEWS = 4
TARGET_PRECISION, TARGET_RECALL = 0.99, 0.95


def _crop(keep: float) -> Callable[[Image.Image], Image.Image]:
    def crop(image: Image.Image) -> Image.Image:
        w, h = image.size
        dx, dy = round(w * (1 - keep) / 2), round(h * (1 - keep) / 2)
        return image.crop((dx, dy, w - dx, h - dy))

    return crop


def _noise(image: Image.Image) -> Image.Image:
    rng = np.random.default_rng(sum(image.tobytes()[:4096]))
    pixels = np.asarray(image, np.float64) + rng.normal(0.0, 10.0, (image.height, image.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _text(image: Image.Image) -> Image.Image:
    out = image.copy()
    draw = ImageDraw.Draw(out)
    w, h = out.size
    font = ImageFont.load_default(size=max(12, h // 12))
    draw.text((w // 20, h - h // 6), "Holiday 2019 - do not share", font=font, fill="white",
              stroke_width=2, stroke_fill="black")  # fmt: skip
    draw.text((w // 2, h // 20), "@lookalike", font=font, fill=(255, 255, 0))
    return out


def _screenshot(image: Image.Image) -> Image.Image:
    """The photo in an app window: title bar, side borders, a toolbar of buttons below."""
    w, h = image.size
    top, side, bottom = h // 10, w // 20, h // 6
    canvas = Image.new("RGB", (w + 2 * side, h + top + bottom), (236, 236, 236))
    canvas.paste(image, (side, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, canvas.width, top - 4), fill=(48, 48, 56))
    for k, colour in enumerate(((237, 95, 87), (245, 190, 79), (98, 197, 84))):
        x = 12 + 22 * k
        draw.ellipse((x, top // 2 - 7, x + 14, top // 2 + 7), fill=colour)
    for k in range(5):
        x = side + k * (w // 5) + 10
        draw.rounded_rectangle((x, h + top + 12, x + w // 5 - 20, h + top + bottom - 12), 8,
                               fill=(0, 122, 255) if k == 0 else (200, 200, 205))  # fmt: skip
    return canvas


_LANCZOS = Image.Resampling.LANCZOS
# name -> (transform, file format); "a pHash can survive": the frame's geometry is kept.
TRANSFORMS: dict[str, tuple[Callable[[Image.Image], Image.Image], str]] = {
    "resize 50%": (lambda im: im.resize((im.width // 2, im.height // 2), _LANCZOS), "JPEG"),
    "JPEG q=30": (lambda im: im, "JPEG30"),
    "crop 10%": (_crop(0.90), "JPEG"),
    "crop 25%": (_crop(0.75), "JPEG"),
    "mirror": (lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "JPEG"),
    "rotate 90": (lambda im: im.transpose(Image.Transpose.ROTATE_90), "JPEG"),
    "brightness +30%": (lambda im: ImageEnhance.Brightness(im).enhance(1.3), "JPEG"),
    "contrast -30%": (lambda im: ImageEnhance.Contrast(im).enhance(0.7), "JPEG"),
    "blur r=2": (lambda im: im.filter(ImageFilter.GaussianBlur(2)), "JPEG"),
    "noise sigma=10": (_noise, "JPEG"),
    "text overlay": (_text, "JPEG"),
    "screenshot padding": (_screenshot, "PNG"),
}  # fmt: skip
# Decided before the run from how a pHash works (sign of the 8x8 lowest DCT frequencies of the
# whole frame): photometric edits, rescaling, recompression, a mild crop and the 8 flips/turns
# (through the variants) keep the frame; a 25% crop, large text and a window around the photo
# move or cover a large part of it.
SURVIVABLE = (
    "resize 50%", "JPEG q=30", "crop 10%", "mirror", "rotate 90", "brightness +30%",
    "contrast -30%", "blur r=2", "noise sigma=10",
)  # fmt: skip


@dataclass(frozen=True)
class Entry:
    path: Path
    group: str
    obj: int  # the object photographed: hard negatives share it with a different group
    transform: str  # "" for originals and hard negatives


def _save(image: Image.Image, path: Path, kind: str) -> Path:
    if kind == "PNG":
        path = path.with_suffix(".png")
        image.save(path, "PNG")
    else:
        image.save(path, "JPEG", quality=30 if kind == "JPEG30" else 95)
    return path


def build_set(images: Path | None, limit: int | None, folder: Path) -> list[Entry]:
    """Bases, their copies and the hard negatives, written under ``folder``."""
    entries: list[Entry] = []
    if images is not None:
        files = sorted(images.glob("ukbench*.jpg"))
        objects = len(files) // VIEWS if limit is None else min(limit, len(files) // VIEWS)
    else:
        from testkit.imagegen import make_photo_like

        objects = 8 if limit is None else limit
    for obj in range(objects):
        group = f"object{obj:04d}"
        if images is not None:
            base_file = folder / files[obj * VIEWS].name
            shutil.copyfile(files[obj * VIEWS], base_file)
            for view in range(1, VIEWS):
                negative = folder / files[obj * VIEWS + view].name
                shutil.copyfile(files[obj * VIEWS + view], negative)
                entries.append(Entry(negative, f"{group}-view{view}", obj, ""))
        else:
            base_file = folder / f"generated{obj:04d}.jpg"
            make_photo_like(obj, (640, 480)).save(base_file, "JPEG", quality=95)
        entries.append(Entry(base_file, group, obj, ""))
        with Image.open(base_file) as opened:
            # Copies of the image as displayed: 31 UKBench bases carry an EXIF orientation, which
            # ingestion applies and a saved copy (no EXIF) must not need.
            base = ImageOps.exif_transpose(opened).convert("RGB")
        for number, (name, (transform, kind)) in enumerate(TRANSFORMS.items()):
            target = folder / f"{base_file.stem}_t{number:02d}.jpg"
            entries.append(Entry(_save(transform(base), target, kind), group, obj, name))
    return entries


def lookalike_items(entries: Sequence[Entry]) -> list[EvalItem]:
    max_pixels = Settings.model_fields["max_image_pixels"].default
    items = []
    for entry in entries:
        loaded = load_for_signals(entry.path, max_pixels=max_pixels, embedder=None)
        variants = phash_variants(loaded.image)
        items.append(EvalItem(str(entry.path), variants[0], tuple(variants[1:])))
    return items


def imagededup_run(
    folder: Path, truth: dict[str, str]
) -> tuple[list[EvalItem], set[tuple[str, str]]]:
    """imagededup's hashes as items (for its curve) and its find_duplicates pairs at 10."""
    hasher = _import_imagededup_phash()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encodings = hasher.encode_images(image_dir=folder, num_enc_workers=2)
        duplicates = hasher.find_duplicates(
            encoding_map=encodings, max_distance_threshold=IMAGEDEDUP_THRESHOLD
        )
    items = [EvalItem(str(folder / name), bytes.fromhex(code)) for name, code in encodings.items()]
    pairs = {(str(folder / a), str(folder / b)) for a, found in duplicates.items() for b in found}
    return items, pairs


def _copy_pairs(entries: Sequence[Entry]) -> dict[str, list[tuple[str, str]]]:
    """Per transform, the (original, copy) path pairs."""
    base = {e.group: str(e.path) for e in entries if not e.transform and "-view" not in e.group}
    pairs: dict[str, list[tuple[str, str]]] = {name: [] for name in TRANSFORMS}
    for entry in entries:
        if entry.transform:
            pairs[entry.transform].append((base[entry.group], str(entry.path)))
    return pairs


def _found_pairs(items: Sequence[EvalItem], radius: int) -> set[tuple[str, str]]:
    found = phash_pairs(items, radius)
    paths = [item.path for item in items]
    return {
        (paths[a], paths[b]) for a, b in zip(found.left.tolist(), found.right.tolist(), strict=True)
    }


def _has(pairs: set[tuple[str, str]], a: str, b: str) -> bool:
    return (a, b) in pairs or (b, a) in pairs


def _hard_negatives(entries: Sequence[Entry], pairs: set[tuple[str, str]]) -> tuple[int, int]:
    """Predicted pairs of the same object in different groups, and how many such pairs exist."""
    obj = {str(e.path): e.obj for e in entries}
    group = {str(e.path): e.group for e in entries}
    found = sum(obj[a] == obj[b] and group[a] != group[b] for a, b in pairs)
    counts = np.bincount([e.obj for e in entries])
    same_object = int((counts * (counts - 1) // 2).sum())
    groups = np.unique([e.group for e in entries], return_counts=True)[1]
    return found, same_object - int((groups * (groups - 1) // 2).sum())


def _transform_cell(
    found: set[tuple[str, str]],
    pairs: Sequence[tuple[str, str]],
    name: str,
    transform_of: dict[str, str],
    truth: dict[str, str],
) -> str:
    """Recall: (base, copy) pairs found. Precision: of the predicted pairs that involve a copy
    made by this transform, those within its group. F1 of the two."""
    hit = sum(_has(found, a, b) for a, b in pairs)
    recall = hit / max(1, len(pairs))
    involving = [(a, b) for a, b in found if name in (transform_of[a], transform_of[b])]
    correct = sum(truth[a] == truth[b] for a, b in involving)
    if not involving:
        return f"{hit}/{len(pairs)} · R {recall:.1%} · P n/a (none predicted) · F1 0"
    precision = correct / len(involving)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return f"{hit}/{len(pairs)} · R {recall:.1%} · P {precision:.1%} · F1 {f1:.3f}"


def _subset(
    items: Sequence[EvalItem], entries: Sequence[Entry], transforms: Sequence[str]
) -> list[EvalItem]:
    keep = {str(e.path) for e in entries if not e.transform or e.transform in transforms}
    return [item for item in items if item.path in keep]


def _row(label: str, result: ThresholdResult) -> list[str]:
    return [label, f"{result.threshold:g}", str(result.tp), str(result.fp), str(result.fn),
            f"{result.precision:.4f}", f"{result.recall:.4f}", f"{result.f1:.4f}"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DATA, help="the ukbench1000 folder")
    parser.add_argument("--limit", type=int, default=None, help="objects to use (default all)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    images = args.images if args.images.is_dir() else None
    if images is None:
        print(f"{args.images} not found: generated photo-like bases, no hard negatives")
    has_imagededup = importlib.util.find_spec("imagededup") is not None

    with tempfile.TemporaryDirectory(prefix="copy_detection_") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        entries = build_set(images, args.limit, folder)
        print(f"{len(entries)} images written in {time.perf_counter() - start:.1f} s", flush=True)
        truth = {str(e.path): e.group for e in entries}
        start = time.perf_counter()
        items = lookalike_items(entries)
        hash_s = time.perf_counter() - start
        identity = [EvalItem(i.path, i.phash) for i in items]
        dedup_items: list[EvalItem] = []
        dedup_pairs: set[tuple[str, str]] = set()
        dedup_s = 0.0
        if has_imagededup:
            start = time.perf_counter()
            dedup_items, dedup_pairs = imagededup_run(folder, truth)
            dedup_s = time.perf_counter() - start

        met: dict[str, bool] = {}
        curves = {"lookalike (pHash + flips/rotations)": evaluate(items, truth, RADII),
                  IDENTITY: evaluate(identity, truth, RADII)}  # fmt: skip
        if dedup_items:
            curves["imagededup PHash"] = evaluate(dedup_items, truth, RADII)
        ours = curves["lookalike (pHash + flips/rotations)"]
        found_ours = _found_pairs(items, DEFAULT_RADIUS)
        found_identity = _found_pairs(identity, DEFAULT_RADIUS)
        per_transform = []
        recall_ours: dict[str, float] = {}
        transform_of = {str(e.path): e.transform for e in entries}
        for name, pairs in _copy_pairs(entries).items():
            cells = [name, "yes" if name in SURVIVABLE else "no"]
            for found in (found_ours, found_identity) + ((dedup_pairs,) if dedup_items else ()):
                cells.append(_transform_cell(found, pairs, name, transform_of, truth))
            per_transform.append(cells)
            recall_ours[name] = sum(_has(found_ours, a, b) for a, b in pairs) / max(1, len(pairs))
        overall = [
            _row("lookalike, default radius", ours[DEFAULT_RADIUS]),
            _row("lookalike, best-F1 radius", best_f1(ours)),
            _row("lookalike identity only, radius 8", curves[IDENTITY][DEFAULT_RADIUS]),
        ]
        measured = [n for n in SURVIVABLE if recall_ours[n] >= TARGET_RECALL]
        survivable: list[list[str]] = []
        for label, names in (("expected", SURVIVABLE), ("measured", measured)):
            kept = _subset(items, entries, names)
            subset_truth = {i.path: truth[i.path] for i in kept}
            subset = evaluate(kept, subset_truth, RADII)
            survivable.append(_row(f"{label}: lookalike, default radius", subset[DEFAULT_RADIUS]))
            survivable.append(_row(f"{label}: lookalike, best-F1 radius", best_f1(subset)))
            if dedup_items:
                at_ten = score_pairs(dedup_pairs, subset_truth, IMAGEDEDUP_THRESHOLD, "imagededup")
                survivable.append(_row(f"{label}: imagededup, default 10", at_ten))
            met[label] = (
                subset[DEFAULT_RADIUS].precision >= TARGET_PRECISION
                and subset[DEFAULT_RADIUS].recall >= TARGET_RECALL
            )
        if dedup_items:
            at_default = score_pairs(dedup_pairs, truth, IMAGEDEDUP_THRESHOLD, "imagededup")
            swept = curves["imagededup PHash"][IMAGEDEDUP_THRESHOLD]
            assert (at_default.tp, at_default.fp) == (swept.tp, swept.fp), (at_default, swept)
            overall.append(_row("imagededup find_duplicates, default 10", at_default))
            overall.append(
                _row("imagededup, best-F1 threshold", best_f1(curves["imagededup PHash"]))
            )
        negatives = []
        methods = [("lookalike, radius 8", found_ours), ("identity only, radius 8", found_identity)]
        if dedup_items:
            methods.append(("imagededup, threshold 10", dedup_pairs))
        for label, found in methods:
            fp, total = _hard_negatives(entries, found)
            negatives.append([label, f"{fp} of {total:,}"])

    header = ["method", "threshold", "TP", "FP", "FN", "precision", "recall", "F1"]
    timing = f"hashing {hash_s:.1f} s (lookalike, one process)" + (
        f", {dedup_s:.1f} s (imagededup encode + find_duplicates)" if dedup_items else ""
    )
    tables = Tables(header, overall, survivable, per_transform, negatives)
    body = _body(images, entries, timing, tables, met, measured)
    print(body, flush=True)
    if args.no_write:
        return 0
    plot = pr_curve_png(
        curves, PNG, title="Copy detection on UKBench: duplicate pairs, radius 0-16"
    )
    body += f"\n\n![PR curve](img/{plot.name})"
    title = "Copy detection on UKBench: lookalike vs imagededup"
    packages = ["imagehash", "imagededup", "pillow", "numpy"]
    _report.write_section("copy_detection", title, body, packages=packages)
    return 0


@dataclass(frozen=True)
class Tables:
    header: list[str]
    overall: list[list[str]]
    survivable: list[list[str]]
    per_transform: list[list[str]]
    negatives: list[list[str]]


def _body(
    images: Path | None,
    entries: Sequence[Entry],
    timing: str,
    tables: Tables,
    met: dict[str, bool],
    measured: Sequence[str],
) -> str:
    bases = sum(1 for e in entries if not e.transform and "-view" not in e.group)
    source = (
        f"{bases} UKBench objects (`{images.name}`)"
        if images is not None
        else f"{bases} generated photo-like bases (UKBench folder missing: no hard negatives)"
    )
    verdict = {label: "met" if ok else "**not met**" for label, ok in met.items()}
    transform_header = ["transform", "survivable", "lookalike r<=8", "lookalike identity only r<=8"]
    if len(tables.per_transform[0]) > len(transform_header):
        transform_header.append("imagededup <=10")
    return "\n\n".join(
        [
            f"{source}, {len(TRANSFORMS)} transformed copies of each base; {len(entries)} "
            f"images; {timing}.",
            "All transforms:",
            _report.markdown_table(tables.header, tables.overall),
            f"Expected survivable: {', '.join(SURVIVABLE)}. Measured survivable (lookalike "
            f"recall >= {TARGET_RECALL:.0%} at radius {DEFAULT_RADIUS}): {', '.join(measured)}. "
            f"Target precision >= {TARGET_PRECISION} with recall >= {TARGET_RECALL} at the "
            f"default radius: expected set {verdict['expected']}, measured set "
            f"{verdict['measured']}.",
            _report.markdown_table(tables.header, tables.survivable),
            "Per transform, each method at its default threshold:",
            _report.markdown_table(transform_header, tables.per_transform),
            "Hard negatives (another photo of the same object) predicted as duplicates:",
            _report.markdown_table(
                ["method", "pairs predicted / same-object pairs"], tables.negatives
            ),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
