"""The access log's writer: one line per request, written in batches off the request path.

Used by :mod:`edge_runner.http.dataplane` (which calls :meth:`AccessLog.add`
once per request: a clock read and a deque append) and started and closed by
:mod:`edge_runner.server`.  A background thread wakes every ``interval``
seconds, or as soon as :data:`BATCH_LINES` lines wait, formats the waiting
lines exactly as the configured log handler would (JSON or text, through
:func:`edge_api.logs.json_line` / :func:`edge_api.logs.text_line`) and writes
them with one write and one flush.  :meth:`AccessLog.close` writes every line
still waiting, so a runner that shuts down loses none.  If logging is set up
some other way (a test's handler, a library embedding the runner), each line
goes through :mod:`logging` as an ordinary record instead, still off the
request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edge_api.logs import JsonFormatter, TextFormatter, json_line, text_line

ACCESS_LOGGER = "edge_runner.access"
#: Waiting lines that wake the writer before its interval is up.
BATCH_LINES = 512

_Entry = tuple[float, str, dict[str, object]]
_Line = Callable[[float, str, str, str, dict[str, object]], str]


class AccessLog:
    """Access lines: added on the request path, written in batches by a thread."""

    def __init__(self, interval: float = 0.2, logger: str = ACCESS_LOGGER) -> None:
        self.interval = interval
        self.logger = logging.getLogger(logger)
        self._pending: deque[_Entry] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def add(self, message: str, fields: dict[str, object]) -> None:
        """Queue one line (call only if :attr:`enabled`); written within ``interval``."""
        self._pending.append((time.time(), message, fields))
        if self._thread is None or self._closed or len(self._pending) >= BATCH_LINES:
            if self._closed:
                self.flush()  # late lines of a closed log: written at once
            elif self._thread is None:
                self.start()
            else:
                self._wake.set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write every waiting line and stop the thread (idempotent)."""
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def flush(self) -> None:
        """Write the lines waiting now (from any thread)."""
        with self._write_lock:
            entries = []
            while self._pending:
                entries.append(self._pending.popleft())
            if entries:
                self._write(entries)

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let a bad line stop the log
                logging.getLogger(__name__).exception("access log write failed")

    def _write(self, entries: list[_Entry]) -> None:
        handler, line = _fast_path(self.logger)
        if handler is None or line is None:
            for created, message, fields in entries:
                record = self.logger.makeRecord(self.logger.name, logging.INFO, "(access)", 0,
                                                message, (), None, extra=fields)
                record.created = created
                record.msecs = int((created - int(created)) * 1000) + 0.0
                self.logger.handle(record)
            return
        name = self.logger.name
        text = "".join(line(created, "INFO", name, message, fields) + "\n"
                       for created, message, fields in entries)
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        finally:
            handler.release()


def _fast_path(logger: logging.Logger) -> tuple[logging.StreamHandler[Any] | None,
                                                 _Line | None]:
    """The single stream handler and line format access lines reach, if that is all they reach."""
    root = logging.getLogger()
    node: logging.Logger | None = logger
    while node is not None and node is not root:
        if node.handlers or node.filters or not node.propagate:
            return None, None
        node = node.parent
    if len(root.handlers) != 1 or root.filters:
        return None, None
    [handler] = root.handlers
    if type(handler) is not logging.StreamHandler or handler.filters:
        return None, None
    if handler.level > logging.INFO:
        return None, None
    formatter = handler.formatter
    if type(formatter) is JsonFormatter:
        return handler, json_line
    if type(formatter) is TextFormatter:
        return handler, text_line
    return None, None
