"""The batched access log (edge_runner.http.accesslog): lines written off the request path
are the lines the log formatters would write, none is lost on close, and a log set up
some other way still gets every line through logging."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_api.logs import JsonFormatter, TextFormatter, json_line
from edge_runner.http.accesslog import (
    BATCH_LINES,
    AccessLog,
    Entry,
    fields_of,
    json_access_line,
)

FIELDS: dict[str, object] = {"request_id": "r1", "function": "f", "route": "f/0",
                             "method": "GET", "path": "/a%20b", "status": 200,
                             "duration_ms": 1.25, "outcome": "ok"}


def add(log: AccessLog, path: str = "/a%20b", request_id: str = "r1") -> None:
    """One request line with FIELDS' values (``path`` and ``request_id`` aside)."""
    log.request("GET", path, 200, request_id, "f", "f/0", 0.00125, "ok")


@contextlib.contextmanager
def only_handler(formatter: logging.Formatter) -> Iterator[io.StringIO]:
    """The root logger with one stream handler, as edge_api.logs.configure sets it up
    (pytest's own capture handlers set aside meanwhile)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


@pytest.mark.parametrize("formatter", [JsonFormatter(), TextFormatter()], ids=["json", "text"])
def test_a_batched_line_is_what_the_formatter_writes(formatter: logging.Formatter) -> None:
    with only_handler(formatter) as stream:
        log = AccessLog(interval=3600)
        add(log)
        log.close()
    [line] = stream.getvalue().splitlines()
    record = logging.getLogger("edge_runner.access").makeRecord(
        "edge_runner.access", logging.INFO, "x", 0, "GET /a%20b 200", (), None,
        extra=dict(FIELDS))
    stamp = line.split('"')[3] if line.startswith("{") else line.split(" ")[0]
    expected = formatter.format(record)
    expected_stamp = expected.split('"')[3] if expected.startswith("{") else expected.split()[0]
    assert line == expected.replace(expected_stamp, stamp)
    if line.startswith("{"):
        assert json.loads(line)["path"] == "/a%20b"


def test_no_line_is_lost_on_close_and_order_is_kept() -> None:
    with only_handler(JsonFormatter()) as stream:
        log = AccessLog(interval=3600)
        count = 3 * BATCH_LINES + 7  # some batches leave early (full), the rest on close
        for i in range(count):
            add(log, f"/{i}", str(i))
        log.close()
        ids = [json.loads(line)["request_id"] for line in stream.getvalue().splitlines()]
        assert ids == [str(i) for i in range(count)]
        add(log, "/late", "late")  # after close: at once
        assert json.loads(stream.getvalue().splitlines()[-1])["request_id"] == "late"


def test_on_an_event_loop_a_line_is_written_within_the_interval_without_close() -> None:
    """The batch is formatted by a timer of the loop that added the line, then written by
    the writer thread: the line appears while the log stays open."""

    async def scenario(stream: io.StringIO) -> list[str]:
        log = AccessLog(interval=0.05)
        add(log, "/timed", "timed")
        assert stream.getvalue() == ""  # not on the request path
        deadline = asyncio.get_running_loop().time() + 10
        while not stream.getvalue() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        lines = stream.getvalue().splitlines()
        log.close()
        return lines

    with only_handler(JsonFormatter()) as stream:
        lines = asyncio.run(scenario(stream))
    assert [json.loads(line)["request_id"] for line in lines] == ["timed"]


def test_another_logging_setup_gets_every_line_as_a_record(
        caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(interval=3600)
    with caplog.at_level(logging.INFO, logger="edge_runner.access"):
        for i in range(5):
            add(log, f"/{i}", str(i))
        log.close()
    records = [r for r in caplog.records if r.name == "edge_runner.access"]
    assert [r.getMessage() for r in records] == [f"GET /{i} 200" for i in range(5)]
    assert [r.__dict__["request_id"] for r in records] == [str(i) for i in range(5)]


#: Text a client or a guest chooses: any code point, quotes, backslashes, controls.
HOSTILE = st.text(st.characters(), max_size=40)


@given(method=HOSTILE, path=HOSTILE, status=st.integers(100, 599), request_id=HOSTILE,
       function=HOSTILE, route=HOSTILE, outcome=HOSTILE,
       seconds=st.floats(0, 1e5, allow_nan=False), created=st.floats(0, 4e9))
def test_the_fast_json_line_is_json_line_byte_for_byte(  # noqa: PLR0917
        method: str, path: str, status: int, request_id: str, function: str, route: str,
        outcome: str, seconds: float, created: float) -> None:
    entry: Entry = (created, method, path, status, request_id, function, route, seconds,
                    outcome)
    message, fields = fields_of(entry)
    expected = json_line(created, "INFO", "edge_runner.access", message, fields)
    assert json_access_line("edge_runner.access", entry) == expected
    assert json.loads(expected)["path"] == path
