"""Metadata filters: typed conditions compiled into a Milvus boolean expression.

User text never reaches Milvus as expression syntax: field names are checked against the schema,
values are converted to the field's type, and strings are quoted and escaped here. Anything else
is a :class:`FilterError` before a request is sent.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from services.errors import FilterError
from services.schema import FILTERABLE_FIELDS, FieldKind

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "contains"]
Scalar = str | int | float | bool
_ORDERED_OPS = {"<", "<=", ">", ">="}
_MAX_IN_VALUES = 1000
# Virtual fields: "tag" is an element of "tags"; "date" is the EXIF date, stored as exif_ts.
_ALIASES = {"tag": "tags", "date": "exif_ts"}


@dataclass(frozen=True)
class Condition:
    """``field op value``; ``value`` is a tuple for ``in``."""

    field: str
    op: Op
    value: Scalar | tuple[Scalar, ...]


def eq(field: str, value: Scalar) -> Condition:
    return Condition(field, "==", value)


def one_of(field: str, values: Sequence[Scalar]) -> Condition:
    return Condition(field, "in", tuple(values))


def has_tag(tag: str) -> Condition:
    return Condition("tags", "contains", tag)


def between(field: str, low: Scalar | None, high: Scalar | None) -> list[Condition]:
    """Inclusive range; either end may be open."""
    conditions = []
    if low is not None:
        conditions.append(Condition(field, ">=", low))
    if high is not None:
        conditions.append(Condition(field, "<=", high))
    return conditions


def date_range(start: date | datetime | None, end: date | datetime | None) -> list[Condition]:
    """EXIF date within [start, end]; a bare ``end`` date includes that whole day."""
    conditions = [eq("has_exif_date", True)]
    if start is not None:
        conditions.append(Condition("exif_ts", ">=", _epoch(start, end_of_day=False)))
    if end is not None:
        conditions.append(Condition("exif_ts", "<=", _epoch(end, end_of_day=True)))
    return conditions


def has_gps(value: bool = True) -> Condition:
    return eq("has_gps", value)


def compile_filter(conditions: Sequence[Condition]) -> str:
    """The Milvus expression for the conjunction of ``conditions`` ("" for none)."""
    return " and ".join(_compile(condition) for condition in conditions)


def _compile(condition: Condition) -> str:
    field = condition.field
    kind = FILTERABLE_FIELDS.get(field)
    if kind is None:
        known = ", ".join(sorted({*FILTERABLE_FIELDS, *_ALIASES}))
        raise FilterError(f"unknown filter field {field!r}; filterable fields: {known}")
    op = condition.op
    if kind is FieldKind.STRING_ARRAY:
        if op == "contains":
            return f"array_contains({field}, {_literal(kind, field, condition.value)})"
        if op == "in":
            values = _values(kind, field, condition.value)
            return f"array_contains_any({field}, [{', '.join(values)}])"
        raise FilterError(f"{field} supports 'contains' and 'in' only, not {op!r}")
    if op == "contains":
        raise FilterError(f"'contains' applies to tags only, not {field}")
    if op == "in":
        values = _values(kind, field, condition.value)
        return f"{field} in [{', '.join(values)}]"
    if op in _ORDERED_OPS and kind is FieldKind.BOOL:
        raise FilterError(f"{field} is true/false; use == or !=")
    if op not in {"==", "!=", *_ORDERED_OPS}:
        raise FilterError(f"unknown operator {op!r}")
    return f"{field} {op} {_literal(kind, field, condition.value)}"


def _values(kind: FieldKind, field: str, value: object) -> list[str]:
    if not isinstance(value, tuple) or not value:
        raise FilterError(f"'in' on {field} needs a non-empty list of values")
    if len(value) > _MAX_IN_VALUES:
        raise FilterError(f"'in' on {field} takes at most {_MAX_IN_VALUES} values")
    return [_literal(kind, field, item) for item in value]


def _literal(kind: FieldKind, field: str, value: object) -> str:
    """``value`` as a Milvus literal of ``kind``; strings quoted and escaped."""
    if isinstance(value, tuple):
        raise FilterError(f"{field} takes a single value here, not a list")
    if kind in (FieldKind.STRING, FieldKind.STRING_ARRAY):
        if not isinstance(value, str):
            raise FilterError(f"{field} takes text, got {value!r}")
        return _quote(field, value)
    if kind is FieldKind.BOOL:
        if not isinstance(value, bool):
            raise FilterError(f"{field} takes true or false, got {value!r}")
        return "true" if value else "false"
    if kind is FieldKind.INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FilterError(f"{field} takes a whole number, got {value!r}")
        if not -(2**63) <= value < 2**63:
            raise FilterError(f"{field}: {value} is out of the 64-bit range")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterError(f"{field} takes a number, got {value!r}")
    if not math.isfinite(value):
        raise FilterError(f"{field} takes a finite number, got {value!r}")
    return repr(float(value))


def _quote(field: str, text: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise FilterError(f"{field}: control characters are not allowed in filter values")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def listing_any_path(paths: Sequence[str]) -> str:
    """A filter for the rows that list any of ``paths`` (as first path or among ``paths``)."""
    literals = "[" + ", ".join(_quote("path", p) for p in paths) + "]"
    return f"path in {literals} or array_contains_any(paths, {literals})"


def _epoch(moment: date | datetime, *, end_of_day: bool) -> int:
    if not isinstance(moment, datetime):
        clock = datetime.max.time() if end_of_day else datetime.min.time()
        moment = datetime.combine(moment, clock)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return int(moment.replace(tzinfo=UTC).timestamp())


# -- the text form used by the CLI's --where ----------------------------------------------------

_WHERE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(==|=|!=|<=|>=|<|>|~|\s+in\s+)\s*(.*?)\s*$")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def parse_where(text: str) -> list[Condition]:
    """Parse one ``--where`` clause: ``FIELD OP VALUE``.

    OP is one of ``= != < <= > >=``, ``~`` (tags contains) or ``in`` (comma-separated values).
    ``tag=cat`` means the tags contain "cat"; ``date>=2020-01-01`` filters on the EXIF date.
    """
    match = _WHERE.match(text)
    if match is None:
        raise FilterError(
            f"cannot parse filter {text!r}: expected FIELD OP VALUE, e.g. source=holiday, "
            "width>=1024, tag=cat, format in JPEG,PNG, date>=2020-01-01"
        )
    name, raw_op, raw_value = match.group(1), match.group(2).strip(), match.group(3)
    op: Op = "==" if raw_op == "=" else "contains" if raw_op == "~" else raw_op  # type: ignore[assignment]
    field = _ALIASES.get(name, name)
    if field not in FILTERABLE_FIELDS:
        known = ", ".join(sorted({*FILTERABLE_FIELDS, *_ALIASES}))
        raise FilterError(f"unknown filter field {name!r}; filterable fields: {known}")
    raw_value = _unquote(raw_value)
    if name == "date":
        return _parse_date_clause(op, raw_value)
    kind = FILTERABLE_FIELDS[field]
    if kind is FieldKind.STRING_ARRAY and op == "==":
        op = "contains"
    if op == "in":
        values = tuple(_convert(kind, field, _unquote(item)) for item in raw_value.split(","))
        return [Condition(field, op, values)]
    return [Condition(field, op, _convert(kind, field, raw_value))]


def _parse_date_clause(op: Op, raw_value: str) -> list[Condition]:
    moment = _parse_date(raw_value)
    if op == "==":
        return date_range(moment, moment)
    if op in {">=", ">"}:
        # "> a day" means after that whole day.
        return (
            date_range(moment, None)
            if op == ">="
            else [
                eq("has_exif_date", True),
                Condition("exif_ts", ">", _epoch(moment, end_of_day=True)),
            ]
        )
    if op in {"<=", "<"}:
        return (
            date_range(None, moment)
            if op == "<="
            else [
                eq("has_exif_date", True),
                Condition("exif_ts", "<", _epoch(moment, end_of_day=False)),
            ]
        )
    raise FilterError(f"date supports = < <= > >=, not {op!r}")


def _parse_date(text: str) -> date | datetime:
    try:
        if "T" in text or " " in text.strip():
            return datetime.fromisoformat(text.strip())
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise FilterError(f"date: {text!r} is not an ISO date like 2021-06-30") from exc


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def _convert(kind: FieldKind, field: str, text: str) -> Scalar:
    if kind in (FieldKind.STRING, FieldKind.STRING_ARRAY):
        return text
    if kind is FieldKind.BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise FilterError(f"{field} takes true or false, got {text!r}")
    try:
        return int(text) if kind is FieldKind.INT else float(text)
    except ValueError as exc:
        expected = "a whole number" if kind is FieldKind.INT else "a number"
        raise FilterError(f"{field} takes {expected}, got {text!r}") from exc


# -- the same conditions evaluated in process ---------------------------------------------------

RowPredicate = Callable[[Mapping[str, Any]], bool]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def row_predicate(conditions: Sequence[Condition]) -> RowPredicate:
    """A test of a stored row (field name to value, as Milvus returns it) against the
    conjunction of ``conditions``, with the semantics of :func:`compile_filter`'s expression.

    For a few rows already in hand (the hits of a near-duplicate range search) this costs
    microseconds, where Milvus Lite evaluates a string filter over every row of the collection.
    The conditions are validated exactly as :func:`compile_filter` validates them.
    """
    compile_filter(conditions)  # the same FilterError for the same bad condition
    tests = [_condition_test(condition) for condition in conditions]
    return lambda row: all(test(row) for test in tests)


def _condition_test(condition: Condition) -> RowPredicate:
    name, op, wanted = condition.field, condition.op, condition.value
    if FILTERABLE_FIELDS[name] is FieldKind.STRING_ARRAY:
        if op == "contains":
            return lambda row: wanted in row[name]
        choices = frozenset(wanted) if isinstance(wanted, tuple) else frozenset()
        return lambda row: not choices.isdisjoint(row[name])
    if op == "in":
        members = frozenset(wanted) if isinstance(wanted, tuple) else frozenset()
        return lambda row: row[name] in members
    compare = _COMPARE[op]
    return lambda row: bool(compare(row[name], wanted))
