"""What the hybrid design costs: Hamming pre-filter + cosine rerank against an exhaustive search.

    python -m bench.hybrid_recall                       # ../shared/data/ukbench1000, radius 0-20
    python -m bench.hybrid_recall --limit 6 --no-write  # smoke run (generated photos if no data)

Real photos: UKBench holds 4 views of each object; view 0 is a base that gets the 12 transformed
copies of ``bench.copy_detection`` (one group: base + copies), views 1-3 are other photos of the
same object. Every image is hashed as ingestion does (``services.hashing.image_variants``); the
query side uses its 8 variants and the stored side its pHash, the distance being the smallest
over the variants, with an inclusive radius, as ``MilvusStore.search_phash`` computes it.

No CLIP weights can be loaded here, so two honest stand-ins replace "CLIP's exhaustive answer":
labels (the copies of a photo are the neighbours any good embedding ranks first: recall of the
group), and a real but weak image embedding of CLIP's shape (a 512-d colour histogram, 8 levels
per RGB channel, square-rooted and L2-normalised: cosine-comparable, blind to flips, turns and
rescaling like CLIP, with none of its semantics), whose exhaustive top-k the hybrid is scored
against. The second measures what a pre-filter does to a rerank in general; what it does to
CLIP specifically needs CLIP vectors.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench import _report
from bench._copy_edits import TRANSFORMS as COPY_EDITS
from bench.copy_detection import DATA, SEEDS, Entry, build_set, ukbench_bases
from services.hashing import image_variants
from services.pipeline import load_for_signals
from services.search import DEFAULT_MAX_HAMMING
from services.settings import Settings

# Every pHash has exactly 32 bits set (each bit says "above the median of the 64 DCT terms"), so
# distances are even and an odd radius finds what the even one below it finds.
RADII = list(range(0, 21, 2))
TOP_K = 10
BINS = 8  # per RGB channel: 512 bins, CLIP ViT-B/32's dimension


@dataclass(frozen=True)
class Signals:
    """Per image: 8 pHash variants (identity first) as uint64, and the proxy embedding."""

    variants: npt.NDArray[np.uint64]  # (n, 8)
    embedding: npt.NDArray[np.float32]  # (n, 512), unit rows


def colour_histogram(image: Image.Image) -> npt.NDArray[np.float32]:
    """The proxy embedding: a joint RGB histogram (8x8x8) of a 128-pixel thumbnail, square-rooted
    (Hellinger) and L2-normalised, so that the cosine is a similarity in [0, 1]."""
    thumb = image.convert("RGB")
    thumb.thumbnail((128, 128))
    pixels = np.asarray(thumb, dtype=np.uint8).reshape(-1, 3) // (256 // BINS)
    index = (pixels[:, 0].astype(np.int64) * BINS + pixels[:, 1]) * BINS + pixels[:, 2]
    counts = np.sqrt(np.bincount(index, minlength=BINS**3).astype(np.float64))
    return (counts / np.linalg.norm(counts)).astype(np.float32)


# The 12 copies this benchmark has measured since it was written (bench.copy_detection makes more
# since issue 13); "survivable": decided before its first run from how a pHash works.
TRANSFORMS = {
    name: COPY_EDITS[name]
    for name in (
        "resize 50%", "JPEG q=30", "crop 10% centred", "crop 25% centred", "mirror", "rotate 90",
        "brightness +30%", "contrast -30%", "blur r=2", "noise sigma=10", "text overlay",
        "screenshot padding",
    )
}  # fmt: skip
SURVIVABLE = (
    "resize 50%", "JPEG q=30", "crop 10% centred", "mirror", "rotate 90", "brightness +30%",
    "contrast -30%", "blur r=2", "noise sigma=10",
)  # fmt: skip


def signals(entries: Sequence[Entry]) -> Signals:
    max_pixels = Settings.model_fields["max_image_pixels"].default
    variants, embeddings = [], []
    for entry in entries:
        image = load_for_signals(entry.path, max_pixels=max_pixels, embedder=None).image
        variants.append([int.from_bytes(v, "big") for v in image_variants(image)])
        embeddings.append(colour_histogram(image))
    return Signals(np.array(variants, dtype=np.uint64), np.stack(embeddings))


@dataclass(frozen=True)
class RadiusRow:
    radius: int
    candidates: float  # mean Hamming candidates per query (the query itself left out)
    unrelated_rate: float  # share of unrelated images (other objects) within the radius
    copy_recall: float  # group-mates (base + copies) among the candidates
    copy_recall_at_k: float  # group-mates in the hybrid's top-k, per min(k, group-mates)
    recall_vs_exhaustive: float  # hybrid top-k against the exhaustive proxy top-k
    views_at_k: float  # other photos of the same object in the hybrid's top-k, per query


def evaluate(
    entries: Sequence[Entry], sig: Signals, radii: Sequence[int], top_k: int
) -> tuple[list[RadiusRow], dict[str, float], dict[str, float], float, float]:
    """Per radius, the hybrid against the exhaustive search over every image, for every query
    that has group-mates (bases and copies). Also: exhaustive copy recall@k, per-transform copy
    recall at the default radius and of the exhaustive proxy search, exhaustive view recall."""
    n = len(entries)
    groups = np.array([e.group for e in entries])
    objects = np.array([e.obj for e in entries])
    queries = [i for i, e in enumerate(entries) if "-view" not in e.group]
    identity = sig.variants[:, 0]
    # (queries, n): Hamming distance, min over the query's 8 variants, to each stored pHash.
    distance = np.full((len(queries), n), 64, dtype=np.uint8)
    for variant in range(sig.variants.shape[1]):
        column = sig.variants[queries, variant][:, None]
        np.minimum(distance, np.bitwise_count(column ^ identity[None, :]), out=distance)
    cosine = sig.embedding[queries] @ sig.embedding.T
    rows_q = np.arange(len(queries))
    distance[rows_q, queries] = 64  # a query never finds itself
    cosine[rows_q, queries] = -np.inf
    mates = groups[queries][:, None] == groups[None, :]
    mates[rows_q, queries] = False
    same_object = (objects[queries][:, None] == objects[None, :]) & ~mates
    same_object[rows_q, queries] = False
    unrelated = objects[queries][:, None] != objects[None, :]
    mate_count = mates.sum(axis=1)
    k = min(top_k, n - 1)
    exhaustive = np.argsort(-cosine, axis=1, kind="stable")[:, :k]
    exhaustive_sets = [set(row.tolist()) for row in exhaustive]
    per_radius = []
    for radius in radii:
        within = distance <= radius
        hybrid_cos = np.where(within, cosine, -np.inf)
        top = np.argsort(-hybrid_cos, axis=1, kind="stable")[:, :k]
        top_valid = np.take_along_axis(within, top, axis=1)
        copy_at_k, agree, views = [], [], []
        for q in range(len(queries)):
            chosen = top[q][top_valid[q]]
            copy_at_k.append(mates[q, chosen].sum() / min(k, mate_count[q]))
            agree.append(len(exhaustive_sets[q] & set(chosen.tolist())) / k)
            views.append(same_object[q, chosen].sum())
        per_radius.append(
            RadiusRow(
                radius,
                float(within.sum(axis=1).mean()),
                float(within[unrelated].mean()) if unrelated.any() else 0.0,
                float((within & mates).sum() / mates.sum()),
                statistics.fmean(copy_at_k),
                statistics.fmean(agree),
                statistics.fmean(views),
            )
        )
    exhaustive_copies = statistics.fmean(
        np.take_along_axis(mates, exhaustive, axis=1)[q].sum() / min(k, mate_count[q])
        for q in range(len(queries))
    )
    exhaustive_views = float(np.take_along_axis(same_object, exhaustive, axis=1).sum(1).mean())
    # Per transform: the base as the query, its copy as the answer.
    by_transform_pre: dict[str, float] = {}
    by_transform_exh: dict[str, float] = {}
    position = {q: row for row, q in enumerate(queries)}
    base_of = {
        e.group: i for i, e in enumerate(entries) if not e.transform and "-view" not in e.group
    }
    group_rank = np.argsort(-cosine, axis=1, kind="stable")
    for name in TRANSFORMS:
        pre, exh = [], []
        for i, entry in enumerate(entries):
            if entry.transform != name:
                continue
            q = position[base_of[entry.group]]
            pre.append(distance[q, i] <= DEFAULT_MAX_HAMMING)
            exh.append(i in set(group_rank[q, : min(top_k, n - 1)].tolist()))
        by_transform_pre[name] = statistics.fmean(pre) if pre else float("nan")
        by_transform_exh[name] = statistics.fmean(exh) if exh else float("nan")
    return per_radius, by_transform_pre, by_transform_exh, exhaustive_copies, exhaustive_views


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DATA, help="the ukbench1000 folder")
    parser.add_argument("--limit", type=int, default=None, help="objects to use (default all)")
    parser.add_argument("--top-k", type=int, default=TOP_K)
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    images = args.images if args.images.is_dir() else None
    if images is None:
        print(f"{args.images} not found: generated photo-like bases, no other views")
    with tempfile.TemporaryDirectory(prefix="hybrid_recall_") as tmp:
        start = time.perf_counter()
        bases = ukbench_bases(images, args.limit)
        entries = build_set(bases, SEEDS["ukbench"], Path(tmp), TRANSFORMS)
        sig = signals(entries)
        print(f"{len(entries)} images written and read in {time.perf_counter() - start:.1f} s")
    per_radius, pre, exh, exh_copies, exh_views = evaluate(entries, sig, RADII, args.top_k)
    k = args.top_k
    header = [
        "radius",
        "candidates / query",
        "unrelated within radius (per 1M rows)",
        "copies among candidates",
        f"copies in hybrid top-{k}",
        f"hybrid top-{k} vs exhaustive top-{k}",
        f"other views in top-{k} (exhaustive: {exh_views:.2f})",
    ]
    table = [
        [
            str(r.radius),
            f"{r.candidates:.1f}",
            f"{r.unrelated_rate:.2e} ({r.unrelated_rate * 1e6:,.0f})",
            f"{r.copy_recall:.3f}",
            f"{r.copy_recall_at_k:.3f}",
            f"{r.recall_vs_exhaustive:.3f}",
            f"{r.views_at_k:.2f}",
        ]
        for r in per_radius
    ]
    transforms = [
        [name, "yes" if name in SURVIVABLE else "no", f"{pre[name]:.3f}", f"{exh[name]:.3f}"]
        for name in TRANSFORMS
    ]
    transform_header = [
        "transform",
        "survivable by a pHash",
        f"base finds copy: Hamming <= {DEFAULT_MAX_HAMMING}",
        f"base finds copy: exhaustive proxy top-{k}",
    ]
    tables = (header, table, transform_header, transforms)
    body = _body(images, entries, k, exh_copies, tables)
    print(body)
    if not args.no_write:
        _report.write_section(
            "hybrid_recall",
            "Cost of the hybrid design: Hamming pre-filter + rerank vs exhaustive search",
            body,
            packages=["imagehash", "pillow", "numpy"],
        )
    return 0


def _body(
    images: Path | None,
    entries: Sequence[Entry],
    k: int,
    exh_copies: float,
    tables: tuple[list[str], list[list[str]], list[str], list[list[str]]],
) -> str:
    header, table, transform_header, transforms = tables
    bases = sum(1 for e in entries if not e.transform and "-view" not in e.group)
    queries = sum(1 for e in entries if "-view" not in e.group)
    source = (
        f"{bases} UKBench objects (`{images.name}`): {len(entries)} images, each base with "
        f"{len(TRANSFORMS)} transformed copies and 3 other photos of its object"
        if images is not None
        else f"{bases} generated photo-like bases with {len(TRANSFORMS)} copies each (UKBench "
        "folder missing: no other views)"
    )
    return "\n\n".join(
        [
            f"{source}; {queries} queries (every base and every copy).",
            _report.markdown_table(header, table),
            f"Exhaustive proxy search: copies in top-{k} {exh_copies:.3f}.",
            f"Per transform, the base as the query and its copy as the answer (pre-filter at "
            f"radius {DEFAULT_MAX_HAMMING}):",
            _report.markdown_table(transform_header, transforms),
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
