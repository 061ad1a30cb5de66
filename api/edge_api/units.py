"""Parsing of Kubernetes quantities (``64Mi``) and Go-style durations (``1m30s``).

Used by the pydantic models in :mod:`edge_api.models`; pure functions with unit tests.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$")

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION = re.compile(r"^(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h))+$")
_DURATION_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600)}


def parse_quantity(value: int | str) -> int:
    """Return the number of bytes in a Kubernetes quantity such as ``64Mi`` or ``1G``.

    Plain integers are bytes.  Fractions are allowed where they give whole bytes
    (``1.5Ki``); anything else raises :class:`ValueError` naming the input.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"quantity must not be negative: {value}")
        return value
    match = _QUANTITY.match(value.strip())
    if match is None:
        raise ValueError(f"not a quantity (expected e.g. 64Mi, 1G, 1048576): {value!r}")
    number, suffix = match.group(1), match.group(2) or ""
    factor = _BINARY.get(suffix) or _DECIMAL[suffix]
    total = Decimal(number) * factor
    if total != total.to_integral_value():
        raise ValueError(f"quantity is not a whole number of bytes: {value!r}")
    return int(total)


def parse_duration(value: int | float | str) -> float:
    """Return seconds for a duration such as ``500ms``, ``1s``, ``1m30s`` or ``1.5h``.

    A bare number is seconds.  Raises :class:`ValueError` naming the input.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value}")
        return float(value)
    text = value.strip()
    if not _DURATION.match(text):
        raise ValueError(f"not a duration (expected e.g. 500ms, 1s, 5m, 1m30s): {value!r}")
    try:
        seconds = sum(
            (Decimal(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text)),
            Decimal(0),
        )
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"not a duration: {value!r}") from exc
    return float(seconds)


def format_bytes(value: int) -> str:
    """Render bytes as the shortest exact binary quantity (``67108864`` -> ``64Mi``)."""
    for suffix, factor in reversed(_BINARY.items()):
        if value and value % factor == 0:
            return f"{value // factor}{suffix}"
    return str(value)


def format_duration(seconds: float) -> str:
    """Render seconds as a duration string the parser accepts (``0.5`` -> ``500ms``)."""
    millis = round(seconds * 1000)
    if millis % 1000:
        return f"{millis}ms"
    return f"{millis // 1000}s"
