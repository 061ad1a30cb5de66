"""RFC 9457 problem+json bodies for every error the data plane returns.

Called by :mod:`edge_runner.http.dataplane`; pure functions returning the status,
headers and body to send.
"""

from __future__ import annotations

import json

from edge_runner.errors import InvocationError, Unavailable

CONTENT_TYPE = b"application/problem+json"
TYPE_BASE = "https://edgerunner.dev/problems/"

Problem = tuple[int, list[tuple[bytes, bytes]], bytes]


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    request_id: str,
    *,
    function: str | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Problem:
    document: dict[str, object] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "request_id": request_id,
    }
    if function is not None:
        document["function"] = function
    body = json.dumps(document, separators=(",", ":")).encode()
    return status, [(b"content-type", CONTENT_TYPE), *(headers or [])], body


def from_invocation_error(error: InvocationError, request_id: str, function: str) -> Problem:
    headers = []
    if isinstance(error, Unavailable):
        headers.append((b"retry-after", str(error.retry_after).encode()))
    return problem(
        error.status,
        error.reason.replace("_", "-"),
        error.title,
        error.detail,
        request_id,
        function=function,
        headers=headers,
    )
