"""Filters compile to safe Milvus expressions, and bad ones fail before Milvus."""

from __future__ import annotations

from datetime import date

import pytest

from services.errors import FilterError
from services.filters import (
    Condition,
    between,
    compile_filter,
    date_range,
    eq,
    has_gps,
    has_tag,
    one_of,
    parse_where,
)


def test_conditions_compile_to_expressions() -> None:
    conditions = [
        eq("source", "holiday"),
        one_of("format", ["JPEG", "PNG"]),
        has_tag("cat"),
        *between("width", 100, 2000),
        has_gps(),
    ]
    assert compile_filter(conditions) == (
        'source == "holiday" and format in ["JPEG", "PNG"] and array_contains(tags, "cat") '
        "and width >= 100 and width <= 2000 and has_gps == true"
    )


def test_empty_filter_is_empty_expression() -> None:
    assert compile_filter([]) == ""


@pytest.mark.parametrize(
    "hostile",
    [
        'x" or id != "',
        'x\\" or id != \\"',
        "x') or (1==1",
        '"; drop collection images; "',
        "\\",
    ],
)
def test_strings_are_escaped(hostile: str) -> None:
    expr = compile_filter([eq("source", hostile)])
    assert expr.startswith('source == "') and expr.endswith('"')
    body = expr[len('source == "') : -1]
    # Every quote inside the literal is escaped, and unescaping gives back the input exactly.
    unescaped, i = [], 0
    while i < len(body):
        if body[i] == "\\":
            unescaped.append(body[i + 1])
            i += 2
        else:
            assert body[i] != '"', expr
            unescaped.append(body[i])
            i += 1
    assert "".join(unescaped) == hostile


def test_control_characters_rejected() -> None:
    with pytest.raises(FilterError, match="control characters"):
        compile_filter([eq("source", "a\nb")])


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        (eq("nonexistent", 1), "unknown filter field 'nonexistent'"),
        (eq("phash", "00"), "unknown filter field 'phash'"),
        (eq("width", "wide"), "whole number"),
        (eq("width", 1.5), "whole number"),
        (eq("width", True), "whole number"),
        (eq("has_gps", "yes"), "true or false"),
        (eq("gps_lat", float("nan")), "finite"),
        (Condition("has_gps", ">", True), "use == or !="),
        (Condition("source", "contains", "x"), "tags only"),
        (Condition("tags", "==", "x"), "'contains' and 'in'"),
        (Condition("format", "in", ()), "non-empty"),
        (eq("width", 2**70), "64-bit"),
    ],
)
def test_invalid_conditions_rejected(condition: Condition, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filter([condition])


def test_date_range_includes_whole_end_day() -> None:
    expr = compile_filter(date_range(date(2020, 1, 1), date(2020, 1, 1)))
    assert expr == "has_exif_date == true and exif_ts >= 1577836800 and exif_ts <= 1577923199"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("source=holiday", 'source == "holiday"'),
        ("source = 'with spaces'", 'source == "with spaces"'),
        ("tag=cat", 'array_contains(tags, "cat")'),
        ("tags~dog", 'array_contains(tags, "dog")'),
        ("tag in cat,dog", 'array_contains_any(tags, ["cat", "dog"])'),
        ("format in JPEG,PNG", 'format in ["JPEG", "PNG"]'),
        ("width>=1024", "width >= 1024"),
        ("gps_lat<-10.5", "gps_lat < -10.5"),
        ("has_gps=no", "has_gps == false"),
        ("camera_make!=Canon", 'camera_make != "Canon"'),
        ("date>=2021-06-30", "has_exif_date == true and exif_ts >= 1625011200"),
        ("date<2021-06-30", "has_exif_date == true and exif_ts < 1625011200"),
    ],
)
def test_parse_where(text: str, expected: str) -> None:
    assert compile_filter(parse_where(text)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("width", "cannot parse"),
        ("width >> 3", "takes a whole number"),
        ("colour=red", "unknown filter field 'colour'"),
        ("date>=yesterday", "ISO date"),
        ("width>=ten", "whole number"),
        ("id == '' or 1==1", None),  # parsed as one literal string, never as syntax
    ],
)
def test_parse_where_rejects_or_contains(text: str, message: str | None) -> None:
    if message is None:
        assert compile_filter(parse_where(text)) == "id == \"'' or 1==1\""
        return
    with pytest.raises(FilterError, match=message):
        parse_where(text)
