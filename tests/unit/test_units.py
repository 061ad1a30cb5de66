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
