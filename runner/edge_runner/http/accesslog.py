"""The access log's writer: one line per request, written in batches off the request path.

Used by :mod:`edge_runner.http.dataplane` (which calls :meth:`AccessLog.request`
once per request: a clock read and a deque append of a tuple) and started and
closed by :mod:`edge_runner.server`.  A background thread wakes every
``interval`` seconds, or as soon as :data:`BATCH_LINES` lines wait, formats the
waiting lines exactly as the configured log handler would (JSON or text, the
output of :func:`edge_api.logs.json_line` / :func:`edge_api.logs.text_line`)
and writes them with one write and one flush.  The thread shares the GIL with
the event loop, so a JSON line is built by :func:`json_access_line`, which
writes the same bytes as ``json_line`` at a fraction of its cost (a test
compares them on hostile values).  :meth:`AccessLog.close` writes every line
still waiting, so a runner that shuts down loses none.  If logging is set up
some other way (a test's handler, a library embedding the runner), each line
goes through :mod:`logging` as an ordinary record instead, still off the
request path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edge_api.logs import JsonFormatter, TextFormatter, text_line, timestamp

ACCESS_LOGGER = "edge_runner.access"
#: Waiting lines that wake the writer before its interval is up.
BATCH_LINES = 512

#: One request: time, method, path, status, request id, function, route rule,
#: seconds, outcome.
Entry = tuple[float, str, str, int, str, str, str, float, str]
_Line = Callable[[str, Entry], str]
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii


def fields_of(entry: Entry) -> tuple[str, dict[str, object]]:
    """The message and ``extra`` fields of an access line, as any log record has them."""
    _, method, path, status, request_id, function, route, seconds, outcome = entry
    return f"{method} {path} {status}", {
        "request_id": request_id, "function": function, "route": route, "method": method,
        "path": path, "status": status, "duration_ms": round(seconds * 1e3, 3),
        "outcome": outcome,
    }


def json_access_line(logger: str, entry: Entry) -> str:
    """``json_line`` of an access entry, byte for byte, without building a dictionary."""
    created, method, path, status, request_id, function, route, seconds, outcome = entry
    quoted_method, quoted_path = _quote(method), _quote(path)
    return (
        f'{{"time": "{timestamp(created)}", "level": "info", "logger": {_quote(logger)}, '
        f'"message": {_quote(f"{method} {path} {status}")}, "request_id": {_quote(request_id)}, '
        f'"function": {_quote(function)}, "route": {_quote(route)}, '
        f'"method": {quoted_method}, "path": {quoted_path}, "status": {status}, '
        f'"duration_ms": {round(seconds * 1e3, 3)!r}, "outcome": {_quote(outcome)}}}'
    )


def text_access_line(logger: str, entry: Entry) -> str:
    message, fields = fields_of(entry)
    return text_line(entry[0], "INFO", logger, message, fields)


class AccessLog:
    """Access lines: added on the request path, written in batches by a thread."""

    def __init__(self, interval: float = 0.2, logger: str = ACCESS_LOGGER) -> None:
        self.interval = interval
        self.logger = logging.getLogger(logger)
        self._pending: deque[Entry] = deque()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def request(  # noqa: PLR0917 - positional on the hot path
        self, method: str, path: str, status: int, request_id: str, function: str,
        route: str, seconds: float, outcome: str,
    ) -> None:
        """Queue one request's line (call only if :attr:`enabled`); written within
        ``interval``.  ``function`` and ``route`` are ``""`` when none was found."""
        pending = self._pending
        pending.append((time.time(), method, path, status, request_id, function, route,
                        seconds, outcome))
        if self._thread is None or self._closed or len(pending) >= BATCH_LINES:
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

    def _write(self, entries: list[Entry]) -> None:
        handler, line = _fast_path(self.logger)
        if handler is None or line is None:
            for entry in entries:
                message, fields = fields_of(entry)
                record = self.logger.makeRecord(self.logger.name, logging.INFO, "(access)", 0,
                                                message, (), None, extra=fields)
                created = entry[0]
                record.created = created
                record.msecs = int((created - int(created)) * 1000) + 0.0
                self.logger.handle(record)
            return
        name = self.logger.name
        text = "".join([line(name, entry) + "\n" for entry in entries])
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
        return handler, json_access_line
    if type(formatter) is TextFormatter:
        return handler, text_access_line
    return None, None
