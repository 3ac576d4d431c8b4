"""All-pairs near-duplicate search at collection scale: ``services.hamming_pairs`` on synthetic
pHash codes, identity only and with the 7 rotation/mirror variants, beside imagededup.

    python -m bench.dedup_scale                                  # 10k to 1M codes
    python -m bench.dedup_scale --sizes 2000 --no-write          # smoke run

Codes are uniform random, with 2% of the collection overwritten by planted groups of 2 to 10
members (at 1M, 20,000 groups): each member is the group's base code, one in four of them
rotated or mirrored first, with 0 to ``radius`` random bits flipped. Variant codes come from a
synthetic D4 action on the 8x8 DCT-sign grid (transpose and sign flips, as
``services.hashing.phash_variants`` derives them). Checks: every planted pair within the radius
is found, and the pairs of a random sample of items equal a brute-force numpy scan of all codes.
Peak memory is the rise of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs)
over its RSS before the call.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import logging
import multiprocessing
import sys
import time
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench import _report
from services.hamming_pairs import PairSet, pairs_within

U64 = npt.NDArray[np.uint64]
PNG = Path(__file__).resolve().parent.parent / "docs" / "img" / "dedup_scale.png"
IMAGEDEDUP_LIMIT_S = 120.0
GROUP_SHARE = 0.02  # of the collection, over 6 members on average: 20,000 groups per million
ROTATED_SHARE = 0.25


# --- synthetic codes --------------------------------------------------------------------------


def d4_variants(codes: U64) -> U64:
    """(N, 7) codes of the 7 non-identity D4 transforms, in ``phash_variants`` order, on the 8x8
    grid of DCT signs: a mirror negates odd columns; a quarter turn transposes and negates odd
    rows. A sign flip is modelled as a bit flip, which makes this an exact group action."""
    grid = np.unpackbits(codes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
    grid = grid.reshape(-1, 8, 8)
    odd = (np.arange(8) % 2).astype(np.uint8)
    mirror = grid ^ odd[None, None, :]
    transforms = [mirror]
    for start in (grid, mirror):
        turned = start
        for _ in range(3):
            turned = np.swapaxes(turned, 1, 2) ^ odd[None, :, None]
            transforms.append(turned)
    packed = [np.packbits(t.reshape(-1, 64), axis=1).view(">u8")[:, 0] for t in transforms]
    return np.stack(packed, axis=1).astype(np.uint64)


@dataclass(frozen=True)
class Collection:
    codes: U64
    variants: U64
    groups: list[npt.NDArray[np.int64]]  # member indices of each planted group


def synthetic(size: int, radius: int, seed: int = 0) -> Collection:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64 - 1, size=size, dtype=np.uint64, endpoint=True)
    sizes = rng.integers(2, 11, size=max(1, round(size * GROUP_SHARE / 6)))
    sizes = sizes[np.cumsum(sizes) <= size]
    members = rng.permutation(size)[: int(sizes.sum())]
    bases = np.repeat(rng.integers(0, 2**64 - 1, size=sizes.size, dtype=np.uint64), sizes)
    # One member in four is a rotated or mirrored copy: its identity is a variant of the base.
    turned = rng.random(members.size) < ROTATED_SHARE
    which = rng.integers(0, 7, size=members.size)
    bases[turned] = d4_variants(bases[turned])[np.arange(int(turned.sum())), which[turned]]
    flips = np.zeros(members.size, np.uint64)
    counts = rng.integers(0, radius + 1, size=members.size)
    for member, count in enumerate(counts):
        for bit in rng.choice(64, size=count, replace=False):
            flips[member] |= np.uint64(1) << np.uint64(bit)
    codes[members] = bases ^ flips
    groups = np.split(members.astype(np.int64), np.cumsum(sizes)[:-1])
    return Collection(codes=codes, variants=d4_variants(codes), groups=groups)


# --- checks -----------------------------------------------------------------------------------


def distances_from(item: int, codes: U64, variants: U64 | None) -> npt.NDArray[np.int64]:
    """Brute force: the distance of ``item`` to every code, min over variants both ways."""
    best: npt.NDArray[np.int64] = np.bitwise_count(codes ^ codes[item]).astype(np.int64)
    if variants is not None:
        for k in range(variants.shape[1]):
            np.minimum(best, np.bitwise_count(codes ^ variants[item, k]), out=best)
            np.minimum(best, np.bitwise_count(variants[:, k] ^ codes[item]), out=best)
    best[item] = np.iinfo(np.int64).max
    return best


def planted_recall(found: PairSet, collection: Collection, radius: int, with_variants: bool) -> str:
    """Found / expected pairs inside the planted groups (expected by brute force per group)."""
    variants = collection.variants if with_variants else None
    expected: set[tuple[int, int]] = set()
    for group in collection.groups:
        codes = collection.codes[group]
        for position, item in enumerate(group):
            local = distances_from(position, codes, None if variants is None else variants[group])
            expected.update((min(item, int(o)), max(item, int(o))) for o in group[local <= radius])
    size = collection.codes.size
    keys = found.left * size + found.right
    wanted = np.array(sorted(a * size + b for a, b in expected), np.int64)
    hit = int(np.isin(wanted, keys).sum())
    return f"{hit}/{wanted.size} ({100.0 * hit / max(1, wanted.size):.1f}%)"


def sample_check(
    found: PairSet, collection: Collection, radius: int, with_variants: bool, samples: int
) -> str:
    """Compare the pairs of ``samples`` random items with a brute-force scan of every code."""
    rng = np.random.default_rng(1)
    size = collection.codes.size
    variants = collection.variants if with_variants else None
    grouped = np.concatenate(collection.groups)
    # Half the sample from planted groups, so that it sees pairs, half from anywhere.
    items = np.unique(
        np.concatenate(
            [rng.choice(grouped, samples // 2), rng.integers(0, size, samples - samples // 2)]
        )
    )
    mismatched = 0
    for item in items:
        distance = distances_from(int(item), collection.codes, variants)
        expected = {(int(o), int(distance[o])) for o in np.nonzero(distance <= radius)[0]}
        rows = np.nonzero((found.left == item) | (found.right == item))[0]
        other = np.where(found.left[rows] == item, found.right[rows], found.left[rows])
        got = {(int(o), int(d)) for o, d in zip(other, found.distance[rows], strict=True)}
        mismatched += got != expected
    return f"{items.size - mismatched}/{items.size} equal"


# --- measurement ------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measured(call: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """``call()``, its wall seconds, the rise of peak RSS over the RSS before it and the
    process's peak RSS during it, both in MiB."""
    with contextlib.suppress(OSError):  # return freed heap, so the RSS before is what is in use
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        print("cannot reset the peak RSS; memory figures include earlier peaks")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return result, seconds, (peak - before) / 1024, peak / 1024


def _search(collection: Collection, radius: int, with_variants: bool) -> Callable[[], PairSet]:
    variants = collection.variants if with_variants else None
    return lambda: pairs_within(collection.codes, radius, variants=variants)


def _import_imagededup_phash() -> Any:
    """imagededup's PHash; its package imports torchvision for the CNN method only, which is
    not installed here (it would replace torch), so that one module is stubbed out."""
    if importlib.util.find_spec("torchvision") is None:
        stub = types.ModuleType("imagededup.utils.models")
        stub.CustomModel = stub.MobilenetV3 = object  # type: ignore[attr-defined]
        stub.DEFAULT_MODEL_NAME = "unavailable"  # type: ignore[attr-defined]
        sys.modules.setdefault("imagededup.utils.models", stub)
    from imagededup.methods import PHash  # type: ignore[import-untyped]

    for name in list(logging.root.manager.loggerDict):
        if name.startswith("imagededup"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return PHash(verbose=False)


def imagededup_pairs(codes: U64, radius: int) -> tuple[int, float]:
    """imagededup's find_duplicates (its default brute_force_cython search) on hex strings."""
    hasher = _import_imagededup_phash()
    encoding_map = {f"{i}.jpg": f"{int(code):016x}" for i, code in enumerate(codes)}
    start = time.perf_counter()
    with warnings.catch_warnings():  # "num_enc_workers has no effect": its own default
        warnings.simplefilter("ignore", RuntimeWarning)
        duplicates = hasher.find_duplicates(
            encoding_map=encoding_map,
            max_distance_threshold=radius,
            num_dist_workers=multiprocessing.cpu_count(),
        )
    seconds = time.perf_counter() - start
    pairs = sum(len(found) for found in duplicates.values()) // 2
    return pairs, seconds


# --- report -----------------------------------------------------------------------------------


def write_png(results: list[dict[str, Any]], radius: int) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no growth-curve PNG written."
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    sizes = [r["size"] for r in results]
    axes.plot(sizes, [r["identity_s"] for r in results], "o-", label="hamming_pairs, identity")
    axes.plot(sizes, [r["variants_s"] for r in results], "s-", label="hamming_pairs, + 7 variants")
    ran = [r for r in results if r["imagededup_s"] is not None]
    if ran:
        axes.plot(
            [r["size"] for r in ran],
            [r["imagededup_s"] for r in ran],
            "^--",
            label="imagededup find_duplicates",
        )
    axes.set(xscale="log", yscale="log", xlabel="codes", ylabel="seconds (wall, 2 cores)")
    axes.set_title(f"All pairs within Hamming radius {radius}")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    PNG.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(PNG, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return f"![growth curve](img/{PNG.name})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default="10000,30000,100000,300000,1000000", help="comma-separated N"
    )
    parser.add_argument("--radius", type=int, default=10)
    parser.add_argument("--samples", type=int, default=200, help="items checked by brute force")
    parser.add_argument("--no-imagededup", action="store_true")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    radius = args.radius

    warm = synthetic(500, radius)  # compile (or load the numba cache) before timing
    pairs_within(warm.codes, radius, variants=warm.variants)

    results: list[dict[str, Any]] = []
    last_imagededup: tuple[int, float] | None = None  # size, seconds
    for size in sizes:
        collection = synthetic(size, radius)
        row: dict[str, Any] = {"size": size}
        for label, with_variants in (("identity", False), ("variants", True)):
            found, seconds, peak, process_peak = measured(
                _search(collection, radius, with_variants)
            )
            row[f"{label}_process_mib"] = process_peak
            row[f"{label}_s"], row[f"{label}_mib"], row[f"{label}_pairs"] = (
                seconds,
                peak,
                len(found),
            )
            row[f"{label}_recall"] = planted_recall(found, collection, radius, with_variants)
            row[f"{label}_sample"] = sample_check(
                found, collection, radius, with_variants, args.samples
            )
            print(
                f"N={size:>9,} {label:>8}: {len(found):>9,} pairs in {seconds:7.2f} s, "
                f"peak +{peak:4.0f} MiB (RSS {process_peak:4.0f} MiB), "
                f"planted {row[f'{label}_recall']}, "
                f"sample {row[f'{label}_sample']}",
                flush=True,
            )
        row["imagededup_s"], row["imagededup_note"] = None, "not run"
        projected = (
            None
            if last_imagededup is None
            else last_imagededup[1] * (size / last_imagededup[0]) ** 2
        )
        if args.no_imagededup:
            pass
        elif projected is not None and projected > IMAGEDEDUP_LIMIT_S:
            row["imagededup_note"] = f"not run: ~{projected:,.0f} s projected (N²)"
        elif importlib.util.find_spec("imagededup") is None:
            row["imagededup_note"] = "not run: imagededup is not installed"
        else:
            pairs, seconds = imagededup_pairs(collection.codes, radius)
            agrees = "same pairs" if pairs == row["identity_pairs"] else f"{pairs:,} pairs (≠)"
            row["imagededup_s"], row["imagededup_note"] = seconds, f"{seconds:.2f} s, {agrees}"
            last_imagededup = (size, seconds)
            print(f"N={size:>9,} imagededup: {pairs:,} pairs in {seconds:.2f} s", flush=True)
        results.append(row)

    header = [
        "codes",
        "identity: pairs",
        "identity: time",
        "identity: peak mem",
        "+ 7 variants: pairs",
        "+ 7 variants: time",
        "+ 7 variants: peak mem",
        "planted pairs found (identity / variants)",
        "sample = brute force",
        "imagededup find_duplicates",
    ]
    table = [
        [
            f"{r['size']:,}",
            f"{r['identity_pairs']:,}",
            f"{r['identity_s']:.2f} s",
            f"+{r['identity_mib']:.0f} MiB ({r['identity_process_mib']:.0f})",
            f"{r['variants_pairs']:,}",
            f"{r['variants_s']:.2f} s",
            f"+{r['variants_mib']:.0f} MiB ({r['variants_process_mib']:.0f})",
            f"{r['identity_recall']} / {r['variants_recall']}",
            f"{r['identity_sample']} / {r['variants_sample']}",
            r["imagededup_note"],
        ]
        for r in results
    ]
    largest = max(results, key=lambda r: r["size"])
    body = "\n\n".join(
        [
            f"Radius {radius}; planted groups: {GROUP_SHARE:.0%} of N; imagededup runs until a "
            f"size is projected past {IMAGEDEDUP_LIMIT_S:.0f} s.",
            _report.markdown_table(header, table),
            f"At N = {largest['size']:,}: {largest['identity_s']:.1f} s identity only, "
            f"{largest['variants_s']:.1f} s with variants "
            f"({largest['variants_s'] / max(largest['identity_s'], 1e-9):.0f}x).",
        ]
    )
    print(body)
    if args.no_write:
        return 0
    body += "\n\n" + write_png(results, radius)
    _report.write_section(
        "dedup_scale",
        "All-pairs near-duplicate search at scale",
        body,
        packages=["numpy", "numba", "imagededup"],
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
