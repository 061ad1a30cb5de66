"""The baseline for bench/throughput.py: a bare ASGI app returning the same bytes.

Same server (uvicorn, httptools, uvloop, one process), same response as the
``constant`` function: status 200, ``content-type: text/plain``, body ``ok``,
plus an ``x-request-id`` like the runner adds.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"x-request-id", os.urandom(12).hex().encode()),
            (b"content-length", b"2"),
        ],
    })
    await send({"type": "http.response.body", "body": b"ok"})
