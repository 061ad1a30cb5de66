"""Bounded capture of a guest's stdout/stderr, logged with function and request id.

The sandbox (docs/abi.md) sends guest output to the runner's log, never
to the client.  Each instance owns one :class:`GuestOutput`; the executors set
the request id before an invocation and call :meth:`GuestOutput.flush` after it
(or :meth:`GuestOutput.discard` after a speculative run that will be re-run, so
the log shows each request's output once).  Anything past ``limit`` bytes per
invocation is counted and dropped.
"""

from __future__ import annotations

import logging

log = logging.getLogger("edge_runner.guest")

DEFAULT_LIMIT = 4096


class GuestOutput:
    __slots__ = ("_chunks", "_dropped", "_size", "function", "limit", "request_id")

    def __init__(self, function: str, limit: int = DEFAULT_LIMIT) -> None:
        self.function = function
        self.request_id = ""
        self.limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._dropped = 0

    def room(self) -> int:
        """Bytes this invocation may still add to the log (see :mod:`.wasi_output`)."""
        return max(0, self.limit - self._size)

    def write(self, kept: bytes, size: int) -> None:
        """A guest write of ``size`` bytes, the first ``len(kept)`` of them kept."""
        if kept:
            self._chunks.append(kept)
            self._size += len(kept)
        self._dropped += size - len(kept)

    def flush(self) -> None:
        """Log what the guest wrote during the last invocation, then forget it."""
        if not self._chunks and not self._dropped:
            return
        text = b"".join(self._chunks).decode("utf-8", "replace").rstrip("\n")
        log.info(
            "guest output",
            extra={
                "function": self.function,
                "request_id": self.request_id,
                "guest_output": text,
                "guest_output_dropped": self._dropped,
            },
        )
        self.discard()

    def discard(self) -> None:
        """Forget what the guest wrote since the last flush."""
        self._chunks.clear()
        self._size = 0
        self._dropped = 0
