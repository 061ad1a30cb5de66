"""One keep-alive HTTP connection that must stay the same (support.keepalive).

For "without restart" claims: a process that restarted, or re-executed itself, closes
its connections; :class:`KeepAlive` sends every request on one connection and fails
if the server closed it (it never reconnects), so a test polling through it while a
new version is deployed proves the process served both versions.  The server's
keep-alive timeout (5 s) only closes an idle connection: poll more often than that.
"""

from __future__ import annotations

import http.client
from types import TracebackType
from typing import Self


class KeepAlive:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self._connection = http.client.HTTPConnection(host, port, timeout=10)
        self._connection.connect()
        assert self._connection.sock is not None
        self.local = self._connection.sock.getsockname()

    def get(self, path: str) -> tuple[int, bytes]:
        """Status and body of ``GET path`` on the same connection as every other call."""
        connection = self._connection
        assert connection.sock is not None, "the server closed the keep-alive connection"
        assert connection.sock.getsockname() == self.local
        connection.auto_open = 0  # never reconnect behind the test's back
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert not response.will_close, "the server is closing the connection"
        return response.status, body

    def text(self, path: str) -> str:
        status, body = self.get(path)
        return body.decode() if status == 200 else f"<{status}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._connection.close()


__all__ = ["KeepAlive"]
