"""The edge ABI envelope codec against the byte layout of docs/abi.md.

The reference below walks the layout independently of the codec (struct
offsets by hand), so a mistake in the codec cannot hide in the test.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_runner.abi.envelope import (
    EnvelopeError,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

blobs = st.binary(max_size=64)
pairs = st.lists(st.tuples(blobs, blobs), max_size=6)


def _reference_walk(buf: bytes) -> list[object]:
    """Parse a request envelope field by field with explicit offsets."""
    out: list[object] = []
    offset = 0

    def u32() -> int:
        nonlocal offset
        value = int.from_bytes(buf[offset:offset + 4], "little")
        offset += 4
        return value

    def string() -> bytes:
        nonlocal offset
        size = u32()
        value = buf[offset:offset + size]
        offset += size
        return value

    out.append(u32())
    out += [string(), string(), string()]
    for _ in range(2):
        out.append([(string(), string()) for _ in range(u32())])
    out.append(string())
    assert offset == len(buf)
    return out


@given(method=blobs, path=blobs, query=blobs, params=pairs, headers=pairs, body=st.binary())
def test_request_layout(  # noqa: PLR0917
    method: bytes, path: bytes, query: bytes, params: list[tuple[bytes, bytes]],
    headers: list[tuple[bytes, bytes]], body: bytes,
) -> None:
    buf = encode_request(method, path, query, params, headers, body)
    assert _reference_walk(buf) == [1, method, path, query, params, headers, body]
    assert decode_request(buf) == (method, path, query, params, headers, body)


@given(status=st.integers(100, 599), headers=pairs, body=st.binary())
def test_response_layout(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    handmade = struct.pack("<II", status, len(headers))
    for name, value in headers:
        handmade += struct.pack("<I", len(name)) + name + struct.pack("<I", len(value)) + value
    handmade += struct.pack("<I", len(body)) + body
    assert encode_response(status, headers, body) == handmade
    decoded_status, decoded_headers, decoded_body = decode_response(handmade)
    assert decoded_status == status
    assert decoded_headers == [(n.lower(), v) for n, v in headers]
    assert decoded_body == body


@given(st.binary(max_size=256))
def test_garbage_only_ever_raises_envelope_error(data: bytes) -> None:
    try:
        status, _, _ = decode_response(data)
    except EnvelopeError:
        return
    assert 100 <= status <= 599


@given(status=st.integers(100, 599), headers=pairs, body=st.binary(min_size=1, max_size=64))
def test_every_truncation_is_refused(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    full = encode_response(status, headers, body)
    for cut in range(len(full)):
        with pytest.raises(EnvelopeError):
            decode_response(full[:cut])
    with pytest.raises(EnvelopeError, match="trailing"):
        decode_response(full + b"\0")


@pytest.mark.parametrize(
    ("buf", "message"),
    [
        (struct.pack("<III", 99, 0, 0), "outside"),
        (struct.pack("<III", 600, 0, 0), "outside"),
        (struct.pack("<II", 200, 0xFFFFFFFF) + b"\0" * 8, "count"),
        (struct.pack("<III", 200, 0, 0xFFFFFFF0), "past the end"),
    ],
)
def test_dishonest_lengths(buf: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        decode_response(buf)
