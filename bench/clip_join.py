"""CLIP near-duplicate join: brute force against the IVF join of services.clip_join.

Random unit 512-d vectors, a tenth of them noisy copies of others (cosine about 0.93 to 0.999
with their source), joined at cosine >= 0.95. Recall is against the exact pairs.

    python -m bench.clip_join                                # 20k, 50k, 100k
    python -m bench.clip_join --sizes 2000 --no-write        # smoke run
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from bench import _report
from services.clip_join import NPROBE, exact_join, ivf_join, normalised

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


def measure(count: int, nprobe: int) -> dict[str, float]:
    vectors = planted(count)
    start = time.perf_counter()
    exact = {pair for pair, _ in exact_join(vectors, MIN_COSINE)}
    exact_s = time.perf_counter() - start
    start = time.perf_counter()
    found = {pair for pair, _ in ivf_join(vectors, MIN_COSINE, nprobe=nprobe)}
    ivf_s = time.perf_counter() - start
    return {
        "size": count,
        "pairs": len(exact),
        "exact_s": exact_s,
        "ivf_s": ivf_s,
        "recall": len(exact & found) / len(exact) if exact else 1.0,
        "extra": len(found - exact),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000, 100_000])
    parser.add_argument("--nprobe", type=int, default=NPROBE)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    results = [measure(count, args.nprobe) for count in args.sizes]
    header = ["vectors", "exact pairs", "brute force", "IVF join", "speed-up", "recall", "extra"]
    rows = [
        [
            f"{r['size']:,}",
            f"{r['pairs']:,}",
            f"{r['exact_s']:.2f} s",
            f"{r['ivf_s']:.2f} s",
            f"{r['exact_s'] / max(r['ivf_s'], 1e-9):.1f}x",
            f"{r['recall']:.4f}",
            f"{r['extra']:,}",
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
