"""Guess a ``content-type`` for a guest response that did not set one (docs/abi.md).

Order: common binary magic numbers, JSON, HTML, UTF-8 text, else
``application/octet-stream``.  Pure; called by the data plane only when needed.
"""

from __future__ import annotations

import json

_MAGIC: tuple[tuple[bytes, bytes], ...] = (
    (b"\x89PNG\r\n\x1a\n", b"image/png"),
    (b"\xff\xd8\xff", b"image/jpeg"),
    (b"GIF87a", b"image/gif"),
    (b"GIF89a", b"image/gif"),
    (b"%PDF-", b"application/pdf"),
    (b"\x1f\x8b", b"application/gzip"),
    (b"PK\x03\x04", b"application/zip"),
    (b"\x00asm", b"application/wasm"),
)
_WEBP = (b"RIFF", b"WEBP")
#: Control bytes that never occur in text (WHATWG MIME sniffing's "binary data bytes").
_BINARY_BYTES = frozenset([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body")

TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"
HTML = b"text/html; charset=utf-8"
BINARY = b"application/octet-stream"


def detect(body: bytes) -> bytes:
    """Return the content type to send for ``body``."""
    for magic, kind in _MAGIC:
        if body.startswith(magic):
            return kind
    if body[:4] == _WEBP[0] and body[8:12] == _WEBP[1]:
        return b"image/webp"
    head = body[:64].lstrip()
    if head[:1] in (b"{", b"["):
        try:
            json.loads(body)
        except ValueError:
            pass
        else:
            return JSON
    if head.lower().startswith(_HTML_STARTS):
        return HTML
    if _BINARY_BYTES.intersection(body[:512]):
        return BINARY
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return BINARY
    return TEXT
