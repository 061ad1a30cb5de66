"""Where the access log's lines go when its stream is a pipe, a terminal or a file.

:class:`~edge_runner.http.accesslog.AccessLog` formats its lines on the event loop
in batches.  Handing each batch to a writer thread looked free, but is not: that
thread needs the GIL again after every write, and while it waits for it, every
time the event loop lets go of the GIL (each ctypes call into wasmtime, several
per request) wakes it, only for it to find the GIL taken again.  Measured in
process, the loop paid 8 us per request for a thread that spent 2 us writing;
writing on the loop itself costs it about 1 us (bench/throughput.py shows the
access log's share of throughput).

So the loop writes itself, and never waits:

- A **pipe** or a **terminal** (a container's stdout and stderr are pipes) gets an
  open file description of its own, ``/proc/self/fd/N`` opened again, and only
  that one is non-blocking: the stream's other writers (log records from other
  threads) keep theirs, blocking.  Lines leave in chunks of whole lines of at most
  ``PIPE_BUF`` bytes, which a pipe writes atomically or not at all, so no other
  writer's record can land inside a line.  A reader that falls behind makes the
  chunks wait (up to ``max_backlog`` bytes) until the loop sees the pipe writable;
  past that, new lines are dropped and counted, and once the backlog has drained a
  warning says how many.  A reader that is gone (``EPIPE``) drops every later line.
- A **regular file** never waits for a reader: written at once.

Anything else (a socket, a stream without a descriptor, a system without
``/proc``): :func:`open_sink` returns None, and the writer thread does it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import select
import stat
import sys
import weakref
from collections.abc import Callable
from typing import Any

log = logging.getLogger("edge_runner.http.logsink")

#: Bytes a pipe writes atomically (POSIX: at least 512; Linux: 4096).
PIPE_CHUNK = getattr(select, "PIPE_BUF", 512)
#: Bytes that may wait for a slow reader before lines are dropped (about 13,000 lines).
MAX_BACKLOG = 4 * 1024 * 1024


def open_sink(stream: Any, dropped: Callable[[int], None] | None = None) -> FdSink | None:
    """A sink for ``stream``'s descriptor, or None if the loop cannot write it without
    waiting (see the module docstring).  ``dropped(n)`` is told of lines dropped."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation, closed
        return None
    encoding = getattr(stream, "encoding", None) or "utf-8"
    if stat.S_ISREG(mode):
        return FdSink(fd, encoding, owned=False, chunk=0, dropped=dropped)
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):
        return None
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    return FdSink(own, encoding, owned=True, chunk=PIPE_CHUNK, dropped=dropped)


def chunks(data: bytes, limit: int) -> list[bytes]:
    """``data`` (whole lines) cut after newlines into pieces of at most ``limit`` bytes;
    a single line longer than that is a piece of its own.  ``limit`` 0: one piece."""
    if not limit or len(data) <= limit:
        return [data]
    pieces = []
    start, size = 0, len(data)
    while start < size:
        end = start + limit
        if end < size:
            cut = data.rfind(b"\n", start, end)
            if cut < 0:  # one line longer than the limit
                cut = data.find(b"\n", end)
            end = size if cut < 0 else cut + 1
        pieces.append(data[start:end])
        start = end
    return pieces


class FdSink:
    """Writes whole lines to a descriptor from one thread (the event loop's), without
    waiting; :meth:`close` writes what still waits, waiting if it must."""

    def __init__(self, fd: int, encoding: str, *, owned: bool, chunk: int,
                 dropped: Callable[[int], None] | None = None,
                 max_backlog: int = MAX_BACKLOG) -> None:
        self.fd = fd
        self._encoding = encoding
        self._owned = owned
        self._chunk = chunk
        self._max_backlog = max_backlog
        self._on_dropped = dropped
        self._waiting: collections.deque[bytes] = collections.deque()
        self._backlog = 0
        #: Lines dropped so far (backlog full, or the reader gone).
        self.dropped = 0
        self._reported = 0
        self._watched: asyncio.AbstractEventLoop | None = None
        self._broken = False
        #: Our own descriptor is closed with the sink even if nobody calls close().
        self._release = weakref.finalize(self, os.close, fd) if owned else None

    def write(self, text: str) -> None:
        """Queue ``text`` (whole lines) and write as much as the descriptor takes now."""
        data = text.encode(self._encoding, "backslashreplace")
        for piece in chunks(data, self._chunk):
            if self._broken or self._backlog + len(piece) > self._max_backlog:
                self._drop(piece.count(b"\n"))
                continue
            self._waiting.append(piece)
            self._backlog += len(piece)
        self._drain()

    def close(self) -> None:
        """Write everything still waiting (now blocking), then release the descriptor."""
        self._unwatch()
        if self._owned and not self._broken:
            os.set_blocking(self.fd, True)  # our own description: nobody else's changes
        self._drain()
        if self._release is not None:
            self._release()  # closes our descriptor, once
        self._broken = True  # later writes are dropped

    def _drain(self) -> None:
        waiting = self._waiting
        while waiting:
            piece = waiting[0]
            try:
                written = os.write(self.fd, piece)
            except BlockingIOError:
                self._watch()
                return
            except InterruptedError:
                continue
            except OSError as exc:  # EPIPE, EIO...: nobody will read lines again
                self._break(exc)
                return
            self._backlog -= written
            if written < len(piece):  # a terminal, or a piece over PIPE_BUF
                waiting[0] = piece[written:]
            else:
                waiting.popleft()
        self._unwatch()
        if self.dropped > self._reported:
            log.warning("%d access log lines were dropped: the log's reader did not keep up",
                        self.dropped - self._reported)
            self._reported = self.dropped

    def _watch(self) -> None:
        if self._watched is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to wait with: wait here for room
            select.select([], [self.fd], [])
            self._drain()
            return
        loop.add_writer(self.fd, self._drain)
        self._watched = loop

    def _unwatch(self) -> None:
        if self._watched is not None:
            self._watched.remove_writer(self.fd)
            self._watched = None

    def _break(self, exc: OSError) -> None:
        self._unwatch()
        self._broken = True
        lost = sum(piece.count(b"\n") for piece in self._waiting)
        self._waiting.clear()
        self._backlog = 0
        self._drop(lost)
        log.warning("the access log cannot be written (%s): its lines are dropped", exc)

    def _drop(self, lines: int) -> None:
        self.dropped += lines
        if self._on_dropped is not None and lines:
            self._on_dropped(lines)
