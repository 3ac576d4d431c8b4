"""Read back the markdown tables a benchmark prints, so a smoke test can check its figures."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?")


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[dict[str, str]]

    def column(self, name: str) -> list[str]:
        return [row[name] for row in self.rows]

    def row(self, first_cell: str) -> dict[str, str]:
        """The row whose first cell is ``first_cell``."""
        matches = [row for row in self.rows if row[self.header[0]] == first_cell]
        assert len(matches) == 1, f"{len(matches)} rows {first_cell!r} in {self.header}"
        return matches[0]


def tables(text: str) -> list[Table]:
    """Every markdown table in ``text``, in order."""
    found: list[Table] = []
    block: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|") and line.endswith("|"):
            block.append([cell.strip() for cell in line[1:-1].split("|")])
            continue
        if len(block) >= 2:
            header, rule, *rows = block
            assert all(set(cell) <= {"-", ":"} for cell in rule), f"no header rule: {rule}"
            for row in rows:
                assert len(row) == len(header), f"{row} does not fit {header}"
            found.append(Table(header, [dict(zip(header, row, strict=True)) for row in rows]))
        block = []
    return found


def number(cell: str) -> float:
    """The first number in ``cell`` ("1,234 s" -> 1234.0, "**0.12** (0.1-0.2)" -> 0.12)."""
    match = _NUMBER.search(cell)
    assert match, f"no number in {cell!r}"
    return float(match.group().replace(",", ""))


def fraction(cell: str) -> tuple[int, int]:
    """``"27 of 30"`` or ``"27/30 (90.0%)"`` -> (27, 30)."""
    match = re.search(r"([\d,]+)(?: of |/)([\d,]+)", cell)
    assert match, f"no 'k of n' in {cell!r}"
    return int(match.group(1).replace(",", "")), int(match.group(2).replace(",", ""))
