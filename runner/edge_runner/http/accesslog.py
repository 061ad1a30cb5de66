"""The access log's writer: one line per request, written in batches off the request path.

Used by :mod:`edge_runner.http.dataplane` (which calls :meth:`AccessLog.request`
once per request: a clock read and a list append of a tuple) and closed by
:mod:`edge_runner.server`.  Lines are formatted in batches on the thread that
adds them (the event loop), every ``interval`` seconds or as soon as
:data:`BATCH_LINES` lines wait, exactly as the configured log handler would
format them (JSON or text, the output of :func:`edge_api.logs.json_line` /
:func:`edge_api.logs.text_line`; :func:`json_access_line` writes the same bytes
as ``json_line`` at a fraction of its cost, a test compares them on hostile
values).  A writer thread only writes each batch, with one write and one flush,
so a log reader that is slow blocks that thread, never the event loop.

Why the formatting is not on the writer thread too: it shares the GIL with the
event loop, and a thread holding the GIL for a batch's formatting makes the
loop wait for it at its next C call; measured, the log cost 12-22% of hot
throughput that way (bench/throughput.py), 8-17% now.  :meth:`AccessLog.close`
writes every line still waiting, so a runner that shuts down loses none.  If
logging is set up some other way (a test's handler, a library embedding the
runner), each line goes through :mod:`logging` as an ordinary record instead,
on the writer thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
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
_Handler = logging.StreamHandler[Any]
#: What the writer thread writes: text for a stream handler, or entries as records.
_Batch = tuple[_Handler, str] | list[Entry]
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
    """Access lines: added on the request path, formatted in batches, written by a thread."""

    def __init__(self, interval: float = 0.2, logger: str = ACCESS_LOGGER) -> None:
        self.interval = interval
        self.logger = logging.getLogger(logger)
        self._pending: list[Entry] = []
        self._due: asyncio.TimerHandle | None = None
        #: Batches for the writer thread, in order: formatted text for the one stream
        #: handler, or entries to log as records; None stops the thread.
        self._batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def request(  # noqa: PLR0917 - positional on the hot path
        self, method: str, path: str, status: int, request_id: str, function: str,
        route: str, seconds: float, outcome: str,
    ) -> None:
        """Queue one request's line (call only if :attr:`enabled`, always from the same
        thread); written within ``interval``.  ``function`` and ``route`` are ``""`` when
        none was found."""
        pending = self._pending
        pending.append((time.time(), method, path, status, request_id, function, route,
                        seconds, outcome))
        if len(pending) >= BATCH_LINES or self._closed:
            self.flush()
        elif self._due is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop here: nothing would wake a later batch
                self.flush()
            else:
                self._due = loop.call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Format the lines waiting now and hand them to the writer (from the thread that
        adds them); after :meth:`close`, write them at once."""
        if self._due is not None:
            self._due.cancel()
            self._due = None
        entries, self._pending = self._pending, []
        if not entries:
            return
        handler, line = _fast_path(self.logger)
        name = self.logger.name
        batch: _Batch = (handler, "".join([line(name, entry) + "\n" for entry in entries])) \
            if handler is not None and line is not None else entries
        if self._closed:
            self._write(batch)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._thread.start()
        self._batches.put(batch)

    def close(self) -> None:
        """Write every waiting line and stop the thread (idempotent)."""
        self.flush()
        self._closed = True
        if self._thread is not None:
            self._batches.put(None)
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while (batch := self._batches.get()) is not None:
            try:
                self._write(batch)
            except Exception:  # never let a bad line stop the log
                logging.getLogger(__name__).exception("access log write failed")

    def _write(self, batch: _Batch) -> None:
        if isinstance(batch, list):
            for entry in batch:
                message, fields = fields_of(entry)
                record = self.logger.makeRecord(self.logger.name, logging.INFO, "(access)", 0,
                                                message, (), None, extra=fields)
                created = entry[0]
                record.created = created
                record.msecs = int((created - int(created)) * 1000) + 0.0
                self.logger.handle(record)
            return
        handler, text = batch
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        finally:
            handler.release()


def _fast_path(logger: logging.Logger) -> tuple[_Handler | None, _Line | None]:
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
