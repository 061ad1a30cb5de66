"""Kubernetes quantities and durations as the models parse them."""

from __future__ import annotations

import pytest

from edge_api.units import format_bytes, format_duration, parse_duration, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [("64Mi", 64 * 2**20), ("1Ki", 1024), ("1.5Ki", 1536), ("1G", 10**9), ("500k", 500_000),
     ("1048576", 2**20), (4096, 4096), ("2Gi", 2 * 2**30), ("0", 0)],
)
def test_quantities(text: str | int, expected: int) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["64MB", "-1", "1.1", "Mi", "", "64 Mi", "1e3", "0.3Ki"])
def test_bad_quantities_name_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="quantit"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", 0.5), ("1s", 1.0), ("5m", 300.0), ("1m30s", 90.0), ("1.5h", 5400.0), (2, 2.0),
     ("1h1m1s1ms", 3661.001)],
)
def test_durations(text: str | int, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["1", "1sec", "-1s", "s", "1 s", "ms"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_formatting_round_trips() -> None:
    for value in (64 * 2**20, 1024, 1000, 3 * 2**30):
        assert parse_quantity(format_bytes(value)) == value
    for seconds in (0.5, 1.0, 300.0, 0.001):
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


def test_numbers_are_taken_as_they_are_and_refusals_say_why() -> None:
    assert (parse_quantity(0), parse_quantity(1)) == (0, 1)
    assert (parse_duration(0), parse_duration(0.25)) == (0.0, 0.25)
    for parse, kind in ((parse_quantity, "quantity"), (parse_duration, "duration")):
        with pytest.raises(ValueError) as negative:
            parse(-1)
        assert str(negative.value) == f"{kind} must not be negative: -1"
        with pytest.raises(ValueError) as boolean:
            parse(True)  # a YAML `true` is no number of bytes or seconds
        assert str(boolean.value) == f"not a {kind}: True"


@pytest.mark.parametrize(("value", "text"), [
    (64 * 2**20, "64Mi"), (1024, "1Ki"), (3 * 2**30, "3Gi"), (2**60, "1Ei"), (1536, "1536"),
    (1000, "1000"), (0, "0"), (1, "1"),
])
def test_bytes_are_formatted_as_the_shortest_exact_binary_quantity(value: int, text: str
                                                                   ) -> None:
    assert format_bytes(value) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0.5, "500ms"), (1.0, "1s"), (300.0, "300s"), (0.001, "1ms"), (1.5, "1500ms"),
    (1001.0, "1001s"), (0.0, "0s"),
])
def test_durations_are_formatted_in_whole_seconds_or_milliseconds(seconds: float, text: str
                                                                  ) -> None:
    assert format_duration(seconds) == text
