"""Write one benchmark's tables into its own section of docs/benchmarks.md.

Each script owns the part of the page between ``<!-- BEGIN name -->`` and ``<!-- END name -->``:
its tables, its figures and how they were made. Running it again replaces that part only, so
every table stays reproducible by its one command. The heading and the prose around the markers
(what is measured, what the figures mean) are written by a person and never touched here.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def machine_line() -> str:
    """One line naming this machine's CPU, core count and memory."""
    cpu = platform.processor() or platform.machine()
    family = model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name" and cpu == (platform.processor() or platform.machine()):
                cpu = value
            elif key == "cpu family" and not family:
                family = value
            elif key == "model" and not model:
                model = value
    except OSError:
        pass
    if family:
        # The model name alone ("AMD EPYC") does not tell one generation from another.
        cpu += f" (family {family}, model {model})"
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def versions(packages: Sequence[str]) -> str:
    parts = []
    for name in packages:
        try:
            parts.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return ", ".join(parts)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(
    name: str,
    title: str,
    body: str,
    packages: Sequence[str],
    argv: Sequence[str] | None = None,
    *,
    module: str | None = None,
) -> None:
    """Replace the generated part of section ``name`` of docs/benchmarks.md with ``body`` and its
    provenance; a new section is appended under the heading ``title``. ``argv``: the options
    credited in the command line (default: this process's); ``module``: the bench module that
    wrote it, where it is not ``bench.NAME``."""
    options = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"python -m bench.{module or name} {options}".strip()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    section = (
        f"{begin}\n{body.strip()}\n\n"
        f"- Machine: {machine_line()}\n- Versions: {versions(packages)}\n"
        f"- Command: `{command}`\n- Run: {stamp}"
        + (f" at commit {commit}" if commit else "")
        + f"\n{end}"
    )
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + section + tail
    else:
        text = text.rstrip() + f"\n\n### {title}\n\n" + section + "\n"
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)


def growth_png(
    png: Path,
    curves: Mapping[str, Mapping[int, float]],
    *,
    ylabel: str,
    title: str,
    alt: str,
    target: float | None = None,
) -> str:
    """A rate against the rows already stored, one line per curve (the first dashed: the
    design before), written to ``png``; the Markdown that shows it, or why there is none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no growth-curve PNG written."
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    sizes = sorted({size for rates in curves.values() for size in rates})
    positions = range(len(sizes))
    for (label, rates), style in zip(curves.items(), ("s--", "o-", "^-."), strict=False):
        axes.plot(positions, [rates[s] for s in sizes], style, label=label)
    if target is not None:
        axes.axhline(target, color="grey", linestyle=":", label=f"target {target:.0f}/s")
    axes.set_xticks(list(positions), [f"{s:,}" for s in sizes])
    axes.set(xlabel="rows already stored", ylabel=ylabel)
    axes.set_title(title)
    axes.set_ylim(bottom=0)
    axes.grid(True, alpha=0.3)
    axes.legend()
    png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return f"![{alt}](img/{png.name})"
