"""Copy detection on real photos: lookalike now (pHash + frame codes) beside lookalike before the
frame codes, imagededup's PHash and PDQ, per transform.

    python -m bench.copy_detection                       # ../shared/data/ukbench1000: 250 objects
    python -m bench.copy_detection --set other           # other photos, other random edits
    python -m bench.copy_detection --limit 8 --no-write  # smoke run

``--set ukbench``: UKBench holds 4 views of each object. View 0 of each object is a base image;
views 1-3 are hard negatives, each its own group: the same object, photographed again, is not a
copy. Without the data folder, generated photo-like images stand in as bases (no hard negatives).
``--set other``: an independent check, nothing of it used to tune: scikit-image's bundled photos,
imagededup's test photos (those outside ukbench1000) and generated photo-like images, with another
seed for the random edits; no hard negatives. Each base gets one copy per transform
(``bench._copy_edits``; one group: base + copies), its random parameters drawn from a generator
seeded per base and transform. Every image is written to a temporary folder.

lookalike's signals are computed as ingestion computes them (``services.pipeline.load_for_signals``
with no CLIP model, then ``services.hashing.image_variants`` and ``services.frames.frame_codes`` on
the decoded image); its pairs come from ``services.evaluation``: *now* is what ``lookalike dedup``
links by hashes (pHash pairs over flips and turns plus ``services.frame_pairs``), *before* the
pHash pairs alone, which is what lookalike matched before the frame codes. imagededup's
``PHash.encode_images`` / ``find_duplicates`` and PDQ (``pdqhash``, 8 dihedral hashes, distance
<= 70 of 256) run on the same files.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from bench import _report
from bench._copy_edits import RECALL_FLOOR, TRANSFORMS, Edit
from bench._pdq import PDQ_THRESHOLD, pdq_pairs
from bench.dedup_scale import _import_imagededup_phash
from services.evaluation import (
    EvalItem,
    ThresholdResult,
    best_f1,
    dedup_pairs,
    evaluate,
    evaluate_dedup,
    phash_pairs,
    pr_curve_png,
    score_pairs,
)
from services.frames import frame_codes
from services.hashing import image_variants
from services.patches import image_patch_codes
from services.pipeline import load_for_signals
from services.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "ukbench1000"
OTHER_DATA = ROOT.parent / "shared" / "data" / "imagededup-testdata" / "base_images"
IMG = ROOT / "docs" / "img"
DEFAULT_RADIUS = 8  # lookalike dedup's --max-hamming default
IMAGEDEDUP_THRESHOLD = 10  # imagededup's PHash find_duplicates default
RADII = list(range(17))
VIEWS = 4
UKBENCH_IMAGES = 1000  # ukbench00000-00999: the photos the frame rules were measured on
TARGET_PRECISION, TARGET_RECALL = 0.995, 0.95
SEEDS = {"ukbench": 13, "other": 2027}
# scikit-image's bundled photographs (its drawings, phantoms and 102-pixel crops left out).
SKIMAGE_PHOTOS = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry",
    "hubble_deep_field", "moon", "coins", "clock", "retina", "page", "text", "brick", "grass",
    "gravel", "cell",
)  # fmt: skip
GENERATED_OTHER = 30  # generated bases in --set other
NOW = "lookalike now (pHash + frames + patches)"
FRAMES = "lookalike before patches (pHash + frames)"
BEFORE = "lookalike before frames (pHash + flips/turns)"
IMAGEDEDUP = "imagededup PHash"
PDQ = "PDQ (8 dihedral)"


@dataclass(frozen=True)
class Entry:
    path: Path
    group: str
    obj: int  # the object photographed: hard negatives share it with a different group
    transform: str  # "" for originals and hard negatives


@dataclass(frozen=True)
class Base:
    name: str
    kind: str  # where it comes from: ukbench, skimage, imagededup, generated
    image: Image.Image  # as displayed (EXIF orientation applied): what the copies are made of
    file: Path | None = None  # the original file, copied as it is; None: ``image`` is saved
    negatives: tuple[Path, ...] = ()  # other photos of the same object (hard negatives)


def _save(image: Image.Image, path: Path, kind: str) -> Path:
    if kind == "PNG":
        path = path.with_suffix(".png")
        image.save(path, "PNG")
    else:
        image.save(path, "JPEG", quality=int(kind.removeprefix("JPEG")))
    return path


def _displayed(path: Path) -> Image.Image:
    # Copies of the image as displayed: 31 UKBench bases carry an EXIF orientation, which
    # ingestion applies and a saved copy (no EXIF) must not need.
    with Image.open(path) as opened:
        return ImageOps.exif_transpose(opened).convert("RGB")


def ukbench_bases(images: Path | None, limit: int | None) -> list[Base]:
    if images is None:
        from testkit.imagegen import make_photo_like

        count = 8 if limit is None else limit
        return [
            Base(f"generated{k:04d}", "generated", make_photo_like(k, (640, 480)))
            for k in range(count)
        ]
    files = sorted(images.glob("ukbench*.jpg"))
    objects = len(files) // VIEWS if limit is None else min(limit, len(files) // VIEWS)
    return [
        Base(
            files[obj * VIEWS].stem,
            "ukbench",
            _displayed(files[obj * VIEWS]),
            files[obj * VIEWS],
            tuple(files[obj * VIEWS + view] for view in range(1, VIEWS)),
        )
        for obj in range(objects)
    ]


def other_bases(folder: Path, limit: int | None) -> list[Base]:
    """scikit-image's photos, imagededup's (not UKBench's first 1000) and generated ones;
    ``limit`` caps each of the three."""
    from testkit.imagegen import make_photo_like, sample_photos

    names = SKIMAGE_PHOTOS[:limit]
    photos = sample_photos(names).items()
    bases = [Base(f"skimage-{n}", "skimage", im.convert("RGB")) for n, im in photos]
    files = sorted(folder.glob("ukbench*.jpg")) if folder.is_dir() else []
    files = [f for f in files if int(f.stem.removeprefix("ukbench")) >= UKBENCH_IMAGES]
    bases += [Base(f.stem, "imagededup", _displayed(f), f) for f in files[:limit]]
    count = GENERATED_OTHER if limit is None else min(limit, GENERATED_OTHER)
    seed = SEEDS["other"]
    bases += [
        Base(f"generated{k:04d}", "generated", make_photo_like(seed + k, (640, 480)))
        for k in range(count)
    ]
    return bases


def build_set(
    bases: Sequence[Base],
    seed: int,
    folder: Path,
    transforms: Mapping[str, tuple[Edit, str]] = TRANSFORMS,
) -> list[Entry]:
    """Bases, their copies (one per transform) and the hard negatives, written under
    ``folder``."""
    entries: list[Entry] = []
    for obj, base in enumerate(bases):
        group = f"object{obj:04d}"
        for view, negative in enumerate(base.negatives, start=1):
            target = folder / negative.name
            shutil.copyfile(negative, target)
            entries.append(Entry(target, f"{group}-view{view}", obj, ""))
        if base.file is not None:
            base_file = folder / base.file.name
            shutil.copyfile(base.file, base_file)
        else:
            base_file = _save(base.image, folder / f"{base.name}.jpg", "JPEG95")
        entries.append(Entry(base_file, group, obj, ""))
        for number, (name, (edit, kind)) in enumerate(transforms.items()):
            rng = np.random.default_rng([seed, obj, number])
            target = folder / f"{base.name}_t{number:02d}.jpg"
            entries.append(Entry(_save(edit(base.image, rng), target, kind), group, obj, name))
    return entries


def lookalike_items(entries: Sequence[Entry]) -> list[EvalItem]:
    """The signals ingestion stores for each file (no CLIP): pHash, variants, frame codes,
    patch codes."""
    max_pixels = Settings.model_fields["max_image_pixels"].default
    items = []
    for entry in entries:
        loaded = load_for_signals(entry.path, max_pixels=max_pixels, embedder=None)
        variants = image_variants(loaded.image)
        frames = frame_codes(loaded.image, variants[0])
        items.append(
            EvalItem(
                str(entry.path),
                variants[0],
                tuple(variants[1:]),
                frames=frames,
                patches=image_patch_codes(loaded.image, frames),
            )
        )
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


@dataclass(frozen=True)
class Method:
    """One method's predicted path pairs at its default threshold, and its curve if swept."""

    name: str
    threshold: int  # a Hamming distance: the pairs within it
    pairs: set[tuple[str, str]]
    curve: list[ThresholdResult] | None = None
    seconds: float = 0.0


def _paths(items: Sequence[EvalItem], left: np.ndarray, right: np.ndarray) -> set[tuple[str, str]]:
    return {
        (items[a].path, items[b].path) for a, b in zip(left.tolist(), right.tolist(), strict=True)
    }


def methods_of(
    entries: Sequence[Entry], folder: Path, with_pdq: bool
) -> tuple[list[Method], dict[str, bool]]:
    """Each method's pairs (lookalike now first), and which images' content box is the whole
    frame as ingestion computes it."""
    truth = {str(e.path): e.group for e in entries}
    start = time.perf_counter()
    items = lookalike_items(entries)
    seconds = time.perf_counter() - start
    whole = {item.path: item.frames is not None and item.frames.box.whole for item in items}
    before = phash_pairs(items, DEFAULT_RADIUS)
    framed = [replace(item, patches=None) for item in items]
    methods = [
        Method(NOW, DEFAULT_RADIUS, _paths(items, *dedup_pairs(items, DEFAULT_RADIUS)),
               evaluate_dedup(items, truth, RADII), seconds),
        Method(FRAMES, DEFAULT_RADIUS, _paths(framed, *dedup_pairs(framed, DEFAULT_RADIUS)),
               evaluate_dedup(framed, truth, RADII), seconds),
        Method(BEFORE, DEFAULT_RADIUS, _paths(items, before.left, before.right),
               evaluate(items, truth, RADII), seconds),
    ]  # fmt: skip
    if importlib.util.find_spec("imagededup") is not None:
        start = time.perf_counter()
        dedup_items, found = imagededup_run(folder, truth)
        curve = evaluate(dedup_items, truth, RADII)
        at_default = score_pairs(found, truth, IMAGEDEDUP_THRESHOLD, "imagededup")
        swept = curve[IMAGEDEDUP_THRESHOLD]
        assert (at_default.tp, at_default.fp) == (swept.tp, swept.fp), (at_default, swept)
        seconds = time.perf_counter() - start
        methods.append(Method(IMAGEDEDUP, IMAGEDEDUP_THRESHOLD, found, curve, seconds))
    if with_pdq:
        start = time.perf_counter()
        found = pdq_pairs([e.path for e in entries], PDQ_THRESHOLD)
        methods.append(Method(PDQ, PDQ_THRESHOLD, found, None, time.perf_counter() - start))
    return methods, whole


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


@dataclass(frozen=True)
class TransformScore:
    hit: int
    copies: int
    precision: float | None  # None: no predicted pair involves these copies

    @property
    def recall(self) -> float:
        return self.hit / max(1, self.copies)

    def cell(self) -> str:
        head = f"{self.hit}/{self.copies} · R {self.recall:.1%}"
        if self.precision is None:
            return f"{head} · P n/a (none predicted) · F1 0"
        p, r = self.precision, self.recall
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return f"{head} · P {p:.1%} · F1 {f1:.3f}"


def transform_scores(
    entries: Sequence[Entry], pairs: set[tuple[str, str]]
) -> dict[str, TransformScore]:
    """Per transform: recall of the (base, copy) pairs; precision over the predicted pairs that
    involve a copy made by the transform (right when both images are in one group)."""
    base = {e.group: str(e.path) for e in entries if not e.transform and "-view" not in e.group}
    truth = {str(e.path): e.group for e in entries}
    transform_of = {str(e.path): e.transform for e in entries}
    scores = {}
    for name in TRANSFORMS:
        copies = [(base[e.group], str(e.path)) for e in entries if e.transform == name]
        hit = sum(_has(pairs, a, b) for a, b in copies)
        involving = [(a, b) for a, b in pairs if name in (transform_of[a], transform_of[b])]
        correct = sum(truth[a] == truth[b] for a, b in involving)
        precision = correct / len(involving) if involving else None
        scores[name] = TransformScore(hit, len(copies), precision)
    return scores


def _row(label: str, result: ThresholdResult, negatives: str) -> list[str]:
    return [label, f"{result.threshold:g}", str(result.tp), str(result.fp), str(result.fn),
            f"{result.precision:.4f}", f"{result.recall:.4f}", f"{result.f1:.4f}",
            negatives]  # fmt: skip


def overall_rows(entries: Sequence[Entry], methods: Sequence[Method]) -> list[list[str]]:
    """Each method at its default threshold, and at its best-F1 one where it was swept."""
    truth = {str(e.path): e.group for e in entries}
    rows = []
    for method in methods:
        at_default = score_pairs(method.pairs, truth, method.threshold, method.name)
        fp, total = _hard_negatives(entries, method.pairs)
        rows.append(_row(f"{method.name}, default", at_default, f"{fp} of {total:,}"))
        if method.curve is not None:
            best = best_f1(method.curve)
            rows.append(_row(f"{method.name}, best F1", best, "-"))
    return rows


def target_line(
    now: dict[str, TransformScore], overall: ThresholdResult, hard_negatives: str
) -> str:
    """Which transforms meet the recall target with lookalike now, and whether precision does."""
    met, missed = [], []
    for name, score in now.items():
        floor = RECALL_FLOOR.get(name, TARGET_RECALL)
        (met if score.recall >= floor else missed).append(f"{name} {score.recall:.1%}")
    precision = "met" if overall.precision >= TARGET_PRECISION else "**not met**"
    return (
        f"Targets (lookalike now, hash-only, radius {DEFAULT_RADIUS}): recall >= "
        f"{TARGET_RECALL:.0%} on each transform (crop 25% >= {min(RECALL_FLOOR.values()):.0%}): "
        f"met on {len(met)} of {len(now)} ({', '.join(met) or 'none'}); **not met** on "
        f"{len(missed)} ({', '.join(missed) or 'none'}). Pair precision >= {TARGET_PRECISION}: "
        f"{precision} ({overall.precision:.4f}: {overall.fp} false pairs in "
        f"{overall.tp + overall.fp:,}, hard negatives {hard_negatives})."
    )


def box_split(
    entries: Sequence[Entry], pairs: set[tuple[str, str]], whole: dict[str, bool]
) -> list[list[str]]:
    """The centred crops found, split by whether the base's content box is the whole frame (a
    centred crop is one of the original's windows only then)."""
    base = {e.group: str(e.path) for e in entries if not e.transform and "-view" not in e.group}
    rows = []
    for name in (n for n in TRANSFORMS if n.startswith("crop") and n.endswith("centred")):
        cells = [name]
        for flag in (True, False):
            copies = [e for e in entries if e.transform == name and whole[base[e.group]] is flag]
            hit = sum(_has(pairs, base[e.group], str(e.path)) for e in copies)
            cells.append(f"{hit}/{len(copies)}")
        rows.append(cells)
    return rows


def report(
    set_name: str,
    source: str,
    entries: Sequence[Entry],
    methods: list[Method],
    whole: dict[str, bool],
) -> str:
    truth = {str(e.path): e.group for e in entries}
    scores = {m.name: transform_scores(entries, m.pairs) for m in methods}
    per_transform = [[name, *(scores[m.name][name].cell() for m in methods)] for name in TRANSFORMS]
    now = methods[0]
    bases = [str(e.path) for e in entries if not e.transform and "-view" not in e.group]
    at_default = score_pairs(now.pairs, truth, DEFAULT_RADIUS, now.name)
    fp, total = _hard_negatives(entries, now.pairs)
    timing = "; ".join(
        f"{m.name} {m.seconds:.1f} s" for m in methods if m.name not in (FRAMES, BEFORE)
    )
    header = ["method", "threshold", "TP", "FP", "FN", "precision", "recall", "F1",
              "hard negatives predicted"]  # fmt: skip
    return "\n\n".join(
        [
            f"{source}, {len(TRANSFORMS)} transformed copies of each base (edits seeded with "
            f"{SEEDS[set_name]}); {len(entries)} images. Hashing and pairs, one process "
            f"(load average {os.getloadavg()[0]:.1f} at the end): {timing}.",
            target_line(scores[now.name], at_default, f"{fp} of {total:,}"),
            "All pairs, each method at its default threshold and at its best-F1 one:",
            _report.markdown_table(header, overall_rows(entries, methods)),
            "Per transform (R: recall of the (base, copy) pairs; P: precision over the predicted "
            "pairs that involve a copy made by the transform):",
            _report.markdown_table(
                ["transform", *(f"{m.name} <={m.threshold}" for m in methods)], per_transform
            ),
            f"Centred crops found by lookalike now at radius {DEFAULT_RADIUS}, by the base's "
            f"content box at ingestion's decode ({sum(whole[b] for b in bases)} of {len(bases)} "
            "bases have the whole frame as content box):",
            _report.markdown_table(
                ["transform", "base's box whole", "base's box peeled"],
                box_split(entries, now.pairs, whole),
            ),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SEEDS), default="ukbench", dest="set_name")
    images_help = "the ukbench1000 folder (--set ukbench) or imagededup's base_images (other)"
    parser.add_argument("--images", type=Path, default=None, help=images_help)
    limit_help = "objects (ukbench) or bases per source (other); default all"
    parser.add_argument("--limit", type=int, default=None, help=limit_help)
    parser.add_argument("--no-pdq", action="store_true", help="leave PDQ out")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    with_pdq = not args.no_pdq and importlib.util.find_spec("pdqhash") is not None
    if args.set_name == "ukbench":
        images = args.images or DATA
        found = images if images.is_dir() else None
        if found is None:
            print(f"{images} not found: generated photo-like bases, no hard negatives")
        bases = ukbench_bases(found, args.limit)
        source = (
            f"{len(bases)} UKBench objects (`{images.name}`)"
            if found is not None
            else f"{len(bases)} generated photo-like bases (UKBench folder missing: no hard "
            "negatives)"
        )
    else:
        bases = other_bases(args.images or OTHER_DATA, args.limit)
        kinds = [b.kind for b in bases]
        source = f"{len(bases)} bases not from the tuning set (" + ", ".join(
            f"{kinds.count(k)} {k}" for k in ("skimage", "imagededup", "generated")
        ) + "), no hard negatives"  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="copy_detection_") as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        entries = build_set(bases, SEEDS[args.set_name], folder)
        print(f"{len(entries)} images written in {time.perf_counter() - start:.1f} s", flush=True)
        methods, whole = methods_of(entries, folder, with_pdq)
    body = report(args.set_name, source, entries, methods, whole)
    print(body, flush=True)
    if args.no_write:
        return 0
    name = "copy_detection" if args.set_name == "ukbench" else "copy_detection_other"
    curves = {m.name: m.curve for m in methods if m.curve is not None}
    plot = pr_curve_png(
        curves, IMG / f"{name}_pr.png", title=f"Copy detection ({args.set_name}): radius 0-16"
    )
    body += f"\n\n![PR curve](img/{plot.name})"
    title = f"Copy detection ({args.set_name}): lookalike vs imagededup and PDQ"
    packages = ["imagededup", "pdqhash", "pillow", "numpy", "scikit-image"]
    _report.write_section(name, title, body, packages=packages, module="copy_detection")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
