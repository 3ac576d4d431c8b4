"""Precision, recall and F1 of duplicate pairs against labelled groups, per threshold.

A ground truth labels images with groups; every unordered pair of evaluated items that are both
labelled is a question, a positive when both share a group. A pHash threshold ``t`` predicts the
pairs within Hamming distance ``t`` over flips and rotations (:func:`evaluate`, the whole-frame
``pairs_within`` search of ``lookalike dedup``); :func:`evaluate_dedup` adds the pairs that the
frame rules find at ``max_hamming = t`` (:func:`services.frame_pairs.frame_pairs`), which is all
that ``lookalike dedup`` matches by hashes. A CLIP threshold ``c`` predicts the pairs with cosine
``>= c``. One pHash search at the largest threshold gives every smaller one by filtering on the
distance; the frame rules' radii follow the threshold (``Rule.radius``), so they run per threshold.

An item is one *path*: a stored content known under several paths is expanded to one item per
path (:func:`items_from_records`), so byte-identical copies are evaluated as pairs at distance 0.
With no predicted pair, precision is 1.0 (no false claim made) and F1 is 0.0.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.errors import LookalikeError, QueryError
from services.frame_pairs import frame_pairs
from services.frames import FRAME_CODES, FrameCodes
from services.hamming_pairs import PairSet, codes_from_bytes, pairs_within
from services.patch_pairs import pairs_of_codes
from services.patches import PatchCodes
from services.records import ImageRecord

I64 = npt.NDArray[np.int64]

DEFAULT_RADII: tuple[int, ...] = tuple(range(17))
DEFAULT_COSINES: tuple[float, ...] = tuple(round(0.80 + 0.01 * k, 2) for k in range(20))
_PATH_COLUMNS = ("path", "filename", "file")
_GROUP_COLUMNS = ("group", "group_id", "label")
_CLIP_CHUNK = 1024
HAMMING_SIGNALS = ("phash", "phash+frames")  # thresholds that are radii: smaller is stricter


@dataclass(frozen=True)
class EvalItem:
    """One image path with its signals: pHash, its 7 flip/rotation variants, optional CLIP, and
    optional frame codes (content region and centred windows, :mod:`services.frames`)."""

    path: str
    phash: bytes
    variants: tuple[bytes, ...] = ()
    clip: npt.NDArray[np.float32] | None = field(default=None, compare=False, repr=False)
    frames: FrameCodes | None = None
    patches: PatchCodes | None = None  # blob-anchored patch codes (services.patches)


@dataclass(frozen=True)
class ThresholdResult:
    """Pair counts and scores at one threshold (Hamming radius, or minimum cosine for CLIP)."""

    threshold: float
    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    signal: str = "phash"

    @classmethod
    def of(cls, threshold: float, tp: int, fp: int, fn: int, signal: str) -> ThresholdResult:
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        return cls(threshold, tp, fp, fn, precision, recall, f1, signal)

    def to_dict(self) -> dict[str, float | int | str]:
        return dict(self.__dict__)


def load_ground_truth(csv_path: str | Path) -> dict[str, str]:
    """``{path: group}`` from a CSV with a header ``path,group`` (or ``filename``/``group_id``).

    Relative paths are taken from the CSV's folder; every path is made absolute with links
    resolved (``os.path.realpath``), as :func:`normalise_path` does for stored paths.
    """
    csv_path = Path(csv_path)
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise QueryError(f"cannot read ground truth {csv_path}: {exc}") from exc
    if not rows:
        raise QueryError(f"ground truth {csv_path} is empty: expected a header 'path,group'")
    header = [name.strip().lower() for name in rows[0]]
    path_col = _column(header, _PATH_COLUMNS, csv_path)
    group_col = _column(header, _GROUP_COLUMNS, csv_path)
    truth: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(path_col, group_col):
            raise QueryError(f"ground truth {csv_path} line {line}: expected path and group")
        raw, group = row[path_col].strip(), row[group_col].strip()
        if not raw or not group:
            raise QueryError(f"ground truth {csv_path} line {line}: empty path or group")
        path = normalise_path(raw, base=csv_path.parent)
        if path in truth:
            raise QueryError(f"ground truth {csv_path} line {line}: duplicate path {raw}")
        truth[path] = group
    if not truth:
        raise QueryError(f"ground truth {csv_path} has a header but no rows")
    return truth


def _column(header: list[str], names: Sequence[str], csv_path: Path) -> int:
    for name in names:
        if name in header:
            return header.index(name)
    raise QueryError(
        f"ground truth {csv_path} has no {names[0]!r} column (header: {', '.join(header)}); "
        f"expected one of {', '.join(names)}"
    )


def normalise_path(path: str, base: Path | None = None) -> str:
    """``path`` absolute (relative to ``base`` if given), links resolved: the matching key."""
    joined = os.path.join(base, path) if base is not None else path  # noqa: PTH118
    return os.path.realpath(os.path.expanduser(joined))  # noqa: PTH111


def items_from_records(records: Iterable[ImageRecord], *, normalise: bool = True) -> list[EvalItem]:
    """One item per stored path of each record (so exact copies pair up at distance 0)."""
    items = []
    for record in records:
        for path in record.all_paths:
            items.append(
                EvalItem(
                    path=normalise_path(path) if normalise else path,
                    phash=record.phash,
                    variants=record.phash_dihedral,
                    clip=record.clip,
                    frames=record.frames,
                    patches=record.patches,
                )
            )
    return items


def labelled(items: Sequence[EvalItem], truth: Mapping[str, str]) -> list[EvalItem]:
    """The items whose path the ground truth labels, first occurrence of a path only."""
    seen: set[str] = set()
    kept = []
    for item in items:
        if item.path in truth and item.path not in seen:
            seen.add(item.path)
            kept.append(item)
    return kept


def phash_pairs(items: Sequence[EvalItem], radius: int) -> PairSet:
    """Every pair of ``items`` within ``radius``; over the variants when every item has 7."""
    codes = codes_from_bytes([item.phash for item in items])
    variants = None
    if items and all(len(item.variants) == 7 for item in items):
        variants = np.stack([codes_from_bytes(list(item.variants)) for item in items])
    return pairs_within(codes, radius, variants=variants)


def frame_matrix(items: Sequence[EvalItem]) -> npt.NDArray[np.uint64]:
    """The (N, 4) frame codes of ``items`` as dedup scans them: an item without frame codes
    repeats its pHash (``services.store.HashScan.frames``)."""
    rows = [
        [item.frames.content, *item.frames.windows] if item.frames else [item.phash] * FRAME_CODES
        for item in items
    ]
    flat = codes_from_bytes([code for row in rows for code in row])
    return flat.reshape(len(items), FRAME_CODES)


def dedup_pairs(items: Sequence[EvalItem], radius: int) -> tuple[I64, I64]:
    """The pairs ``left < right`` (indices, sorted) that ``lookalike dedup --max-hamming radius``
    links by hashes: the pHash pairs over flips and turns, the frame rules' pairs and the pairs
    whose patches agree."""
    whole = phash_pairs(items, radius)
    return _union(whole.left, whole.right, *_frame_pairs(items, radius), len(items))


def _frame_pairs(items: Sequence[EvalItem], radius: int) -> tuple[I64, I64]:
    """The frame rules' pairs and the patch pairs at ``radius``."""
    codes = codes_from_bytes([item.phash for item in items])
    found = frame_pairs(codes, frame_matrix(items), radius)
    patched = pairs_of_codes([item.patches for item in items], radius)
    return _union(found.left, found.right, patched.left, patched.right, len(items))


def _union(left: I64, right: I64, more_left: I64, more_right: I64, count: int) -> tuple[I64, I64]:
    keys = np.union1d(left * count + right, more_left * count + more_right).astype(np.int64)
    return keys // count, keys % count


def evaluate_dedup(
    items: Sequence[EvalItem],
    truth: Mapping[str, str],
    thresholds: Sequence[int] = DEFAULT_RADII,
) -> list[ThresholdResult]:
    """Scores of what ``lookalike dedup`` links by hashes (:func:`dedup_pairs`) at each
    ``--max-hamming`` in ``thresholds``, over the labelled ``items``."""
    if not thresholds:
        raise QueryError("give at least one threshold")
    kept = labelled(items, truth)
    groups = _group_ids(kept, truth)
    positives = _positive_pairs(groups)
    signal = HAMMING_SIGNALS[1]
    if len(kept) < 2:
        return [ThresholdResult.of(t, 0, 0, positives, signal) for t in thresholds]
    whole = phash_pairs(kept, max(thresholds))
    results = []
    for radius in thresholds:
        within = whole.distance <= radius
        left, right = _union(
            whole.left[within], whole.right[within], *_frame_pairs(kept, radius), len(kept)
        )
        tp = int(np.count_nonzero(groups[left] == groups[right]))
        results.append(ThresholdResult.of(radius, tp, left.size - tp, positives - tp, signal))
    return results


def evaluate(
    items: Sequence[EvalItem],
    truth: Mapping[str, str],
    thresholds: Sequence[int] = DEFAULT_RADII,
) -> list[ThresholdResult]:
    """pHash scores for each Hamming radius in ``thresholds`` over the labelled ``items``."""
    if not thresholds:
        raise QueryError("give at least one threshold")
    kept = labelled(items, truth)
    groups = _group_ids(kept, truth)
    positives = _positive_pairs(groups)
    if len(kept) < 2:
        return [ThresholdResult.of(t, 0, 0, positives, "phash") for t in thresholds]
    found = phash_pairs(kept, max(thresholds))
    same = groups[found.left] == groups[found.right]
    results = []
    for radius in thresholds:
        within = found.distance <= radius
        tp = int(np.count_nonzero(within & same))
        fp = int(np.count_nonzero(within & ~same))
        results.append(ThresholdResult.of(radius, tp, fp, positives - tp, "phash"))
    return results


def evaluate_clip(
    items: Sequence[EvalItem],
    truth: Mapping[str, str],
    thresholds: Sequence[float] = DEFAULT_COSINES,
) -> list[ThresholdResult]:
    """CLIP scores for each minimum cosine in ``thresholds``; every labelled item needs a vector."""
    if not thresholds:
        raise QueryError("give at least one threshold")
    kept = labelled(items, truth)
    missing = [item.path for item in kept if item.clip is None]
    if missing:
        raise QueryError(f"{len(missing)} labelled images have no CLIP vector, e.g. {missing[0]}")
    groups = _group_ids(kept, truth)
    positives = _positive_pairs(groups)
    sims, same = _cosine_pairs(kept, groups, min(thresholds))
    results = []
    for cosine in thresholds:
        above = sims >= cosine
        tp = int(np.count_nonzero(above & same))
        fp = int(np.count_nonzero(above & ~same))
        results.append(ThresholdResult.of(cosine, tp, fp, positives - tp, "clip"))
    return results


def score_pairs(
    predicted: Iterable[tuple[str, str]], truth: Mapping[str, str], threshold: float, signal: str
) -> ThresholdResult:
    """Scores of an external method's predicted path pairs (both paths labelled; others ignored)."""
    pairs = {(min(a, b), max(a, b)) for a, b in predicted if a != b and a in truth and b in truth}
    tp = sum(truth[a] == truth[b] for a, b in pairs)
    positives = _positive_pairs(np.unique(list(truth.values()), return_inverse=True)[1])
    return ThresholdResult.of(threshold, tp, len(pairs) - tp, positives - tp, signal)


def best_f1(results: Sequence[ThresholdResult]) -> ThresholdResult:
    """The result with the highest F1 (the smallest threshold among ties for pHash)."""
    if not results:
        raise QueryError("no results to choose from")
    return max(
        results,
        key=lambda r: (r.f1, -r.threshold if r.signal in HAMMING_SIGNALS else r.threshold),
    )


def pr_curve_png(
    results: Sequence[ThresholdResult] | Mapping[str, Sequence[ThresholdResult]],
    path: str | Path,
    *,
    title: str = "Duplicate pairs: precision against recall",
) -> Path:
    """Write the precision-recall curve(s) to a PNG, best-F1 point of each labelled."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise LookalikeError("a PR curve needs matplotlib: pip install matplotlib") from exc
    curves = results if isinstance(results, Mapping) else {_label(results): results}
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for label, curve in curves.items():
        ordered = sorted(curve, key=lambda r: r.recall)
        axes.plot([r.recall for r in ordered], [r.precision for r in ordered], ".-", label=label)
        if curve:
            best = best_f1(curve)
            axes.annotate(
                f"{_threshold_text(best)} F1 {best.f1:.3f}",
                (best.recall, best.precision),
                textcoords="offset points",
                xytext=(-10, -14),
                fontsize=8,
                ha="right",
            )
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), title=title)
    axes.grid(True, alpha=0.3)
    axes.legend(loc="lower left")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return target


def _label(results: Sequence[ThresholdResult]) -> str:
    return results[0].signal if results else "results"


def _threshold_text(result: ThresholdResult) -> str:
    if result.signal == "clip":
        return f"cos>={result.threshold:.2f}"
    return f"r={result.threshold:g}"


def _group_ids(items: Sequence[EvalItem], truth: Mapping[str, str]) -> npt.NDArray[np.int64]:
    labels = [truth[item.path] for item in items]
    if not labels:
        return np.zeros(0, np.int64)
    ids: npt.NDArray[np.int64] = np.unique(labels, return_inverse=True)[1].astype(np.int64)
    return ids


def _positive_pairs(groups: npt.NDArray[np.int64] | npt.NDArray[np.intp]) -> int:
    sizes = np.bincount(groups) if groups.size else np.zeros(0, np.int64)
    return int((sizes * (sizes - 1) // 2).sum())


def _cosine_pairs(
    items: Sequence[EvalItem], groups: npt.NDArray[np.int64], minimum: float
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
    """Cosines ``>= minimum`` of the pairs ``i < j`` and whether each pair is a positive."""
    if len(items) < 2:
        return np.zeros(0, np.float32), np.zeros(0, np.bool_)
    vectors = np.stack([item.clip for item in items if item.clip is not None]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims_found, same_found = [], []
    for start in range(0, len(vectors), _CLIP_CHUNK):
        sims = vectors[start : start + _CLIP_CHUNK] @ vectors.T
        rows, cols = np.nonzero(sims >= minimum)
        upper = start + rows < cols
        rows, cols = rows[upper], cols[upper]
        sims_found.append(sims[rows, cols])
        same_found.append(groups[start + rows] == groups[cols])
    return np.concatenate(sims_found), np.concatenate(same_found)
