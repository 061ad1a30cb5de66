"""A small HTTP server on loopback for ``source.url`` tests (support.fileserver).

:class:`FileServer` serves what a test puts in :attr:`FileServer.routes` (a path to a
:class:`Reply`, changeable while it runs) from a thread, and counts the requests per
path, so a test can tell whether the operator fetched again (a retry) or not.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

#: 64 MiB of zeros gzip-compressed to about 64 KB, and the sha256 of what it inflates to:
#: served with ``Content-Encoding: gzip`` it is a decompression bomb.
_INFLATED = b"\0" * (64 << 20)
GZIP_BOMB = gzip.compress(_INFLATED, compresslevel=9)
GZIP_BOMB_SHA256 = hashlib.sha256(_INFLATED).hexdigest()
del _INFLATED


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering (a slow server).
    delay: float = 0.0


def redirect(to: str, status: int = 302) -> Reply:
    return Reply(status, b"", {"location": to})


class FileServer:
    def __init__(self) -> None:
        self.routes: dict[str, Reply] = {}
        self.hits: collections.Counter[str] = collections.Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits[self.path] += 1
                reply = owner.routes.get(self.path, Reply(404, b"not here"))
                time.sleep(reply.delay)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False  # a slow reply does not hold up the test
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


__all__ = ["GZIP_BOMB", "GZIP_BOMB_SHA256", "FileServer", "Reply", "redirect"]
