"""The access log: one line per request, written in batches off the request path.

Used by :mod:`edge_runner.http.dataplane` (which calls :meth:`AccessLog.request`
once per request: a clock read and a list append of a tuple) and closed by
:mod:`edge_runner.server`.  Lines are formatted in batches on the thread that
adds them (the event loop), every ``interval`` seconds or as soon as
:data:`BATCH_LINES` lines wait, exactly as the configured log handler would
format them (JSON or text, the output of :func:`edge_api.logs.json_line` /
:func:`edge_api.logs.text_line`; :func:`json_access_line` writes the same bytes
as ``json_line`` at a fraction of its cost, a test compares them on hostile
values).

Where a batch goes: when the handler's stream is a pipe, a terminal or a file
(the usual case), the loop writes it itself without ever waiting for the reader
(:mod:`edge_runner.http.logsink`, which says why a thread costs more).  Otherwise
(a stream without a descriptor, a socket) a writer thread writes each batch, and
if logging is set up some other way (a test's handler, a library embedding the
runner), each line goes through :mod:`logging` as an ordinary record on that
thread.  :meth:`AccessLog.close` writes every line still waiting, so a runner that
shuts down loses none.
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
from edge_runner.http.logsink import FdSink, open_sink

ACCESS_LOGGER = "edge_runner.access"
#: Waiting lines that are written at once, before the interval is up.
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
    """Access lines: added on the request path, formatted in batches on the loop, written
    by the loop (:mod:`edge_runner.http.logsink`) or, failing that, by a thread."""

    def __init__(self, interval: float = 0.2, logger: str = ACCESS_LOGGER,
                 dropped: Callable[[int], None] | None = None) -> None:
        self.interval = interval
        self.logger = logging.getLogger(logger)
        #: Told how many lines a slow or lost log reader made the sink drop.
        self._on_dropped = dropped
        #: The stream handler the last batch went to, and its sink (None: the thread's).
        self._sink: tuple[_Handler, FdSink | None] | None = None
        self._pending: list[Entry] = []
        self._due: asyncio.TimerHandle | None = None
        #: Batches for the writer thread, in order: formatted text for the one stream
        #: handler, or entries to log as records; None stops the thread.
        self._batches: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
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
        batch: _Batch = entries
        if handler is not None and line is not None:
            name = self.logger.name
            text = "".join([line(name, entry) + "\n" for entry in entries])
            sink = self._sink_of(handler)
            if sink is not None:
                sink.write(text)
                if self._closed:  # a line after close: written now, nothing left open
                    self._close_sink()
                return
            batch = (handler, text)
        if self._closed:
            self._write(batch)
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._run, name="access-log", daemon=True)
            self._writer.start()
        self._batches.put(batch)

    def close(self) -> None:
        """Write every waiting line and stop the thread (idempotent)."""
        self.flush()
        self._closed = True
        self._close_sink()
        if self._writer is not None:
            self._batches.put(None)
            self._writer.join()
            self._writer = None

    def _sink_of(self, handler: _Handler) -> FdSink | None:
        """The sink for ``handler``'s stream (opened on its first batch)."""
        if self._sink is None or self._sink[0] is not handler:
            self._close_sink()
            self._sink = handler, open_sink(handler.stream, self._on_dropped)
        return self._sink[1]

    def _close_sink(self) -> None:
        if self._sink is not None:
            sink = self._sink[1]
            self._sink = None
            if sink is not None:
                sink.close()

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
