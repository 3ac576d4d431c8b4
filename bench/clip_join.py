"""CLIP near-duplicate join: brute force, the IVF range search of before, and the IVF cell
join of services.clip_join (cells found in a PCA projection).

Random unit 512-d vectors, a tenth of them noisy copies of others (cosine about 0.93 to 0.999
with their source), joined at cosine >= 0.95. Recall is against the exact pairs, measured up to
``--exact-max`` vectors (brute force takes about an hour at 1,000,000). The range search of
before (its cells in the full 512 dimensions) runs up to ``--before-max``, with its own
recall.

    python -m bench.clip_join                                # 20k, 50k, 100k, 1M
    python -m bench.clip_join --sizes 2000 --no-write        # smoke run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from bench import _report
from services.clip_join import NPROBE, ClipPair, exact_join, ivf_join, ivf_quantizer, normalised

MIN_COSINE = 0.95
COPY_SHARE = 0.1
DIM = 512


def planted(count: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Random unit vectors whose last ``COPY_SHARE`` are noisy copies of earlier ones."""
    rng = np.random.default_rng(seed)
    copies = max(1, int(count * COPY_SHARE))
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    sources = rng.integers(0, count - copies, copies)
    noise = rng.uniform(0.05, 0.36, (copies, 1)).astype(np.float32)
    vectors[count - copies :] = vectors[sources] + noise * rng.standard_normal(
        (copies, DIM), dtype=np.float32
    )
    return normalised(vectors)


def range_search_join(vectors: npt.NDArray[np.float32], nprobe: int) -> Iterator[ClipPair]:
    """The join before the cell join (kept here for comparison): the same quantizer, the
    vectors added to faiss ``IndexIVFFlat`` and a range search of each block of vectors."""
    index = ivf_quantizer(vectors)
    index.add(np.ascontiguousarray(vectors))
    index.nprobe = min(nprobe, int(index.nlist))
    radius = float(np.nextafter(np.float32(MIN_COSINE), np.float32(-np.inf)))
    for start in range(0, len(vectors), 8192):
        block = np.ascontiguousarray(vectors[start : start + 8192])
        limits, sims, cols = index.range_search(block, radius)
        rows = np.repeat(np.arange(start, start + len(block)), np.diff(limits).astype(np.int64))
        keep = (rows < cols) & (sims >= MIN_COSINE)
        kept = zip(rows[keep].tolist(), cols[keep].tolist(), sims[keep].tolist(), strict=True)
        for i, j, cosine in kept:
            yield (i, j), cosine


def timed(pairs: Iterator[ClipPair]) -> tuple[set[tuple[int, int]], float]:
    start = time.perf_counter()
    found = {pair for pair, _ in pairs}
    return found, time.perf_counter() - start


def measure(count: int, nprobe: int, exact_max: int, before_max: int) -> dict[str, float]:
    vectors = planted(count)
    found, out = timed(ivf_join(vectors, MIN_COSINE, nprobe=nprobe))
    result = {"size": count, "ivf_s": out, "found": len(found)}
    if count <= before_max:
        before, result["before_s"] = timed(range_search_join(vectors, nprobe))
    if count <= exact_max:
        exact, result["exact_s"] = timed(exact_join(vectors, MIN_COSINE))
        result["pairs"] = len(exact)
        result["recall"] = len(exact & found) / len(exact) if exact else 1.0
        result["extra"] = len(found - exact)
        if count <= before_max:
            result["recall_before"] = len(exact & before) / len(exact) if exact else 1.0
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[20_000, 50_000, 100_000, 1_000_000]
    )
    parser.add_argument("--nprobe", type=int, default=NPROBE)
    parser.add_argument(
        "--exact-max", type=int, default=100_000, help="largest size joined by brute force"
    )
    parser.add_argument(
        "--before-max",
        type=int,
        default=100_000,
        help="largest size joined by the range search of before (over 7 minutes at 1,000,000)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = []
    for count in args.sizes:
        results.append(measure(count, args.nprobe, args.exact_max, args.before_max))
        print(results[-1], flush=True)
    header = [
        "vectors", "exact pairs", "brute force", "IVF range search (before)", "IVF join",
        "vs before", "vs brute force", "recall before", "recall", "extra",
    ]  # fmt: skip
    rows = [
        [
            f"{r['size']:,}",
            f"{r['pairs']:,}" if "pairs" in r else "-",
            f"{r['exact_s']:.2f} s" if "exact_s" in r else "not run",
            f"{r['before_s']:.2f} s" if "before_s" in r else "not run",
            f"{r['ivf_s']:.2f} s",
            f"{r['before_s'] / max(r['ivf_s'], 1e-9):.1f}x" if "before_s" in r else "-",
            f"{r['exact_s'] / max(r['ivf_s'], 1e-9):.1f}x" if "exact_s" in r else "-",
            f"{r['recall_before']:.4f}" if "recall_before" in r else "-",
            f"{r['recall']:.4f}" if "recall" in r else "-",
            f"{r['extra']:,}" if "extra" in r else "-",
        ]
        for r in results
    ]
    body = (
        f"Cosine >= {MIN_COSINE}, {COPY_SHARE:.0%} planted copies, {DIM}-d, "
        f"IVF nprobe {args.nprobe}.\n\n" + _report.markdown_table(header, rows)
    )
    print(body)
    if not args.no_write:
        _report.write_section(
            "clip_join", "CLIP near-duplicate join", body, packages=["numpy", "faiss-cpu"]
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
