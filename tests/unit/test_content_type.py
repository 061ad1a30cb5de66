"""Content-type detection for guest responses without one."""

from __future__ import annotations

import pytest

from edge_runner.http.content_type import detect


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"a": 1}', b"application/json"),
        (b"  [1, 2]", b"application/json"),
        (b"{not json", b"text/plain; charset=utf-8"),
        (b"<!DOCTYPE html><html></html>", b"text/html; charset=utf-8"),
        (b"<html><body>x</body></html>", b"text/html; charset=utf-8"),
        ("héllo".encode(), b"text/plain; charset=utf-8"),
        (b"", b"text/plain; charset=utf-8"),
        (b"\x89PNG\r\n\x1a\n....", b"image/png"),
        (b"\xff\xd8\xff\xe0....", b"image/jpeg"),
        (b"GIF89a...", b"image/gif"),
        (b"%PDF-1.7", b"application/pdf"),
        (b"\x1f\x8b\x08\x00", b"application/gzip"),
        (b"RIFF\0\0\0\0WEBPVP8 ", b"image/webp"),
        (b"\x00asm\x01\x00\x00\x00", b"application/wasm"),
        (b"\xfe\xff\x00\x01", b"application/octet-stream"),
        (b"\x04\x00\x00\x00", b"application/octet-stream"),
        (b"tab\tand\r\nnewline", b"text/plain; charset=utf-8"),
    ],
)
def test_detect(body: bytes, expected: bytes) -> None:
    assert detect(body) == expected


# docs/abi.md: the JSON test looks at the first non-blank byte within 64 bytes, control
# bytes count within the first 512, and a WebP needs both RIFF and WEBP.
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b" " * 63 + b'{"a": 1}', b"application/json"),
        (b" " * 64 + b'{"a": 1}', b"text/plain; charset=utf-8"),
        (b"\n" * 63 + b"[1]", b"application/json"),
        (b"a" * 511 + b"\x01", b"application/octet-stream"),
        (b"a" * 512 + b"\x01", b"text/plain; charset=utf-8"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", b"application/octet-stream"),
        (b"RIFX....WEBPVP8 ", b"text/plain; charset=utf-8"),
        (b"   <HEAD><title>x</title>", b"text/html; charset=utf-8"),
        (b"<body>", b"text/html; charset=utf-8"),
        (b"<bodyguard>", b"text/html; charset=utf-8"),
        (b"\xc3\x28 not utf-8", b"application/octet-stream"),
        (b"PK\x03\x04\x14\x00", b"application/zip"),
        (b"GIF87a....", b"image/gif"),
    ],
)
def test_detect_at_the_documented_boundaries(body: bytes, expected: bytes) -> None:
    assert detect(body) == expected
