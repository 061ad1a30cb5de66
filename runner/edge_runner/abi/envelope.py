"""Byte layout of the ``edge`` ABI envelopes (docs/abi.md).

The host encodes a request envelope into guest memory and decodes the response
envelope the guest hands back.  All integers are little-endian u32; a *string*
is ``u32 len`` followed by that many bytes.

    request  = version(=1) method path query param_count {name value}*
               header_count {name value}* body
    response = status header_count {name value}* body

Pure code: :mod:`edge_runner.abi.edge` calls it on the hot path, so it avoids
per-field allocations where it can.  Decoding never trusts a length.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NoReturn

VERSION = 1

_U32 = struct.Struct("<I")
_pack_u32 = _U32.pack
_unpack_u32 = _U32.unpack_from

Pairs = Sequence[tuple[bytes, bytes]]


class EnvelopeError(ValueError):
    """A response envelope that does not follow the layout (the guest's fault)."""


def encode_request(  # noqa: PLR0917 - positional on the hot path, fields in layout order
    method: bytes, path: bytes, query: bytes, params: Pairs, headers: Pairs, body: bytes
) -> bytes:
    """Encode a request envelope; header names must already be lower-case."""
    encoded = _ENCODED  # encoded[n]: n as a u32
    parts = [_VERSION, encoded[len(method)], method, encoded[len(path)], path,
             encoded[len(query)], query, encoded[len(params)]]
    for name, value in params:
        parts += (encoded[len(name)], name, encoded[len(value)], value)
    parts.append(encoded[len(headers)])
    for name, value in headers:
        parts += (encoded[len(name)], name, encoded[len(value)], value)
    parts += (encoded[len(body)], body)
    return b"".join(parts)


#: Encoded lengths below this come from a table (most names and values are short).
_SMALL = 4096
_VERSION = _pack_u32(VERSION)


class _Lengths(dict[int, bytes]):
    """Encoded u32 lengths by size: a table below :data:`_SMALL`, packed above it."""

    def __missing__(self, size: int) -> bytes:
        return _pack_u32(size)


_ENCODED = _Lengths((n, _pack_u32(n)) for n in range(_SMALL))


def _read_string(buf: bytes, offset: int, what: str) -> tuple[bytes, int]:
    end = offset + 4
    if end > len(buf):
        raise EnvelopeError(f"response envelope truncated in the length of {what}")
    (size,) = _unpack_u32(buf, offset)
    stop = end + size
    if stop > len(buf):
        raise EnvelopeError(f"response envelope: {what} of {size} bytes runs past the end")
    return buf[end:stop], stop


def decode_response(buf: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Decode a response envelope into ``(status, headers, body)``.

    Header names are lower-cased.  Raises :class:`EnvelopeError` for any
    inconsistency: a status outside 100..599, a count that cannot fit, a length
    running past the end, or bytes left over after the body.
    """
    if len(buf) < 8:
        raise EnvelopeError(f"response envelope too short ({len(buf)} bytes)")
    status, count = struct.unpack_from("<II", buf, 0)
    if not 100 <= status <= 599:
        raise EnvelopeError(f"response status {status} is outside 100..599")
    # Each header needs at least 8 bytes, so a larger count cannot be honest.
    if count * 8 > len(buf) - 8:
        raise EnvelopeError(f"response header count {count} does not fit the envelope")
    offset = 8
    end = len(buf)
    headers: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        if offset + 4 <= end:  # the common case, read here; _read_string explains a failure
            (size,) = _unpack_u32(buf, offset)
            stop = offset + 4 + size
            if stop + 4 <= end:
                (value_size,) = _unpack_u32(buf, stop)
                value_stop = stop + 4 + value_size
                if value_stop <= end:
                    headers.append((buf[offset + 4:stop].lower(), buf[stop + 4:value_stop]))
                    offset = value_stop
                    continue
        _refuse_header(buf, offset)
    body, offset = _read_string(buf, offset, "the body")
    if offset != end:
        raise EnvelopeError(f"response envelope has {end - offset} trailing bytes")
    return status, headers, body


def _refuse_header(buf: bytes, offset: int) -> NoReturn:
    """Raise the error naming the part of the header at ``offset`` that does not fit."""
    _, offset = _read_string(buf, offset, "a header name")
    _read_string(buf, offset, "a header value")
    raise AssertionError("unreachable: called for a header that does not fit")


def encode_response(status: int, headers: Pairs, body: bytes) -> bytes:
    """Encode a response envelope (what a guest produces; used by tests and tools)."""
    parts = [_pack_u32(status), _pack_u32(len(headers))]
    for name, value in headers:
        parts += [_pack_u32(len(name)), name, _pack_u32(len(value)), value]
    parts += [_pack_u32(len(body)), body]
    return b"".join(parts)


def decode_request(
    buf: bytes,
) -> tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes]], bytes]:
    """Decode a request envelope (what a guest does; used by tests and tools)."""
    if len(buf) < 4 or _unpack_u32(buf, 0)[0] != VERSION:
        raise EnvelopeError("request envelope: bad version")
    offset = 4
    method, offset = _read_string(buf, offset, "method")
    path, offset = _read_string(buf, offset, "path")
    query, offset = _read_string(buf, offset, "query")
    lists: list[list[tuple[bytes, bytes]]] = []
    for what in ("param", "header"):
        if offset + 4 > len(buf):
            raise EnvelopeError(f"request envelope truncated in the {what} count")
        (count,) = _unpack_u32(buf, offset)
        offset += 4
        items = []
        for _ in range(count):
            name, offset = _read_string(buf, offset, f"a {what} name")
            value, offset = _read_string(buf, offset, f"a {what} value")
            items.append((name, value))
        lists.append(items)
    body, offset = _read_string(buf, offset, "the body")
    if offset != len(buf):
        raise EnvelopeError("request envelope has trailing bytes")
    return method, path, query, lists[0], lists[1], body
