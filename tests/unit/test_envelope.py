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


@pytest.mark.parametrize("size", [4095, 4096, 4097, 70_000])
def test_long_fields_around_the_length_table(size: int) -> None:
    """Lengths under 4096 come from a table, longer ones are packed: both the same layout."""
    field = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    pairs = [(field, b"v"), (b"n", field)]
    buf = encode_request(field, field, field, pairs, pairs, field)
    assert _reference_walk(buf) == [1, field, field, field, pairs, pairs, field]


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


# -- where a broken envelope breaks: the error names the field --------------------------------

Segment = tuple[str, bytes]  # what the decoder calls this part, and its bytes


def _string(what: str, value: bytes) -> list[Segment]:
    return [(f"length of {what}", struct.pack("<I", len(value))), (f"{what} body", value)]


def _request_layout() -> list[Segment]:
    layout: list[Segment] = [("version", struct.pack("<I", 1))]
    for what, value in (("method", b"POST"), ("path", b"/p"), ("query", b"q=1")):
        layout += _string(what, value)
    for what, items in (("param", [(b"id", b"7")]), ("header", [(b"x-a", b"b")])):
        layout.append((f"{what} count", struct.pack("<I", len(items))))
        for name, value in items:
            layout += _string(f"a {what} name", name) + _string(f"a {what} value", value)
    return layout + _string("the body", b"hello")


def _expected(layout: list[Segment], cut: int) -> str:
    """The message decoding the first ``cut`` bytes must give."""
    start = 0
    for what, data in layout:
        if cut < start + len(data) or (not data and cut == start):
            if what == "version":
                return "request envelope: bad version"
            if what.endswith(" count"):
                return f"request envelope truncated in the {what}"
            if what.startswith("length of "):
                return f"truncated in the {what}"
            size = len(data)
            return f"{what.removesuffix(' body')} of {size} bytes runs past the end"
        start += len(data)
    raise AssertionError("not a cut")


def test_a_truncated_request_names_the_field_it_ends_in() -> None:
    layout = _request_layout()
    full = b"".join(data for _, data in layout)
    assert decode_request(full) == (b"POST", b"/p", b"q=1", [(b"id", b"7")],
                                    [(b"x-a", b"b")], b"hello")
    for cut in range(len(full)):
        with pytest.raises(EnvelopeError) as caught:
            decode_request(full[:cut])
        assert _expected(layout, cut) in str(caught.value), (cut, str(caught.value))
    with pytest.raises(EnvelopeError) as trailing:
        decode_request(full + b"\0")
    assert str(trailing.value) == "request envelope has trailing bytes"
    with pytest.raises(EnvelopeError) as version:
        decode_request(struct.pack("<I", 2) + full[4:])
    assert str(version.value) == "request envelope: bad version"


@pytest.mark.parametrize(("buf", "message"), [
    (b"", "response envelope too short (0 bytes)"),
    (struct.pack("<HI", 200, 0), "response envelope too short (6 bytes)"),
    # 8 bytes are enough to start: then the body's length is missing.
    (struct.pack("<II", 200, 0), "response envelope truncated in the length of the body"),
    (struct.pack("<II", 200, 1), "response header count 1 does not fit the envelope"),
    # One header fits in exactly 8 more bytes (two empty strings) ...
    (struct.pack("<IIII", 200, 1, 0, 0),
     "response envelope truncated in the length of the body"),
    # ... two do not.
    (struct.pack("<IIII", 200, 2, 0, 0), "response header count 2 does not fit the envelope"),
    (struct.pack("<IIII", 200, 1, 9, 0),
     "response envelope: a header name of 9 bytes runs past the end"),
    (struct.pack("<III", 200, 1, 4) + b"abcd",
     "response envelope truncated in the length of a header value"),
    (struct.pack("<IIII", 200, 1, 0, 99) + b"v" * 8,
     "response envelope: a header value of 99 bytes runs past the end"),
    (struct.pack("<III", 200, 0, 1), "response envelope: the body of 1 bytes runs past the end"),
    (struct.pack("<III", 200, 0, 0) + b"abc", "response envelope has 3 trailing bytes"),
    (struct.pack("<III", 99, 0, 0), "response status 99 is outside 100..599"),
    (struct.pack("<III", 600, 0, 0), "response status 600 is outside 100..599"),
], ids=lambda value: "buf" if isinstance(value, bytes) else value.split(":")[-1][:40])
def test_a_broken_response_is_refused_saying_where(buf: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode_response(buf)
    assert str(caught.value) == message


def test_the_status_bounds_are_inclusive() -> None:
    for status in (100, 599):
        assert decode_response(encode_response(status, [], b""))[0] == status
