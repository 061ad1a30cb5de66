"""Path normalization of a request target, before routing and auth (docs/http.md).

Called by :mod:`edge_runner.http.dataplane` once per request, with the raw
path as the client sent it (ASGI ``raw_path``, still percent-encoded).  Pure
code, one job: turn it into the one path that routing, auth and the guest all
see, or refuse it.

Steps: refuse an encoded ``/`` or ``\\`` (``%2F``, ``%5C``: a proxy and the
runner would disagree on where segments end); decode percent-encoded
unreserved characters (RFC 3986 section 2.3, so ``%2E%2E`` is ``..``); merge
runs of ``/``; remove dot segments (RFC 3986 section 5.2.4), refusing a path
that climbs above ``/``.  The result is returned twice: still encoded (for
``raw_path``) and decoded as UTF-8 (for ``path``, as uvicorn decodes it).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_ENCODED_SEPARATOR = re.compile(rb"%(2[Ff]|5[Cc])")


class PathRejected(ValueError):
    """A request path that cannot be routed safely; the message says why (sent as 400)."""


def _decode_unreserved(match: re.Match[bytes]) -> bytes:
    byte = int(match.group(1), 16)
    return bytes((byte,)) if byte in _UNRESERVED else b"%" + match.group(1).upper()


def _remove_dot_segments(raw: bytes) -> bytes:
    """RFC 3986 5.2.4 on an absolute path with ``//`` merged; raises on climbing above ``/``."""
    output: list[bytes] = []
    segments = raw.split(b"/")[1:]
    last = len(segments) - 1
    trailing = False
    for index, segment in enumerate(segments):
        if segment == b"..":
            if not output:
                raise PathRejected("the path climbs above /")
            output.pop()
            trailing = True
        elif segment == b".":
            trailing = True
        elif segment == b"":
            trailing = index == last
        else:
            output.append(segment)
            trailing = False
    return b"/" + b"/".join(output) + (b"/" if trailing and output else b"")


def normalize(raw_path: bytes) -> tuple[str, bytes]:
    """``(path, raw_path)`` of the normalized target; raises :class:`PathRejected`."""
    if not raw_path.startswith(b"/"):
        raise PathRejected("the path must start with /")
    if b"%" in raw_path:
        if _ENCODED_SEPARATOR.search(raw_path):
            raise PathRejected("the path holds an encoded / or \\ (%2F, %5C)")
        raw_path = _PERCENT.sub(_decode_unreserved, raw_path)
    elif b"/." not in raw_path and b"//" not in raw_path:
        return raw_path.decode("utf-8", "replace"), raw_path  # the common case: nothing to do
    while b"//" in raw_path:
        raw_path = raw_path.replace(b"//", b"/")
    if b"/." in raw_path:
        raw_path = _remove_dot_segments(raw_path)
    return unquote(raw_path.decode("utf-8", "replace"), errors="replace"), raw_path
