"""The access log's descriptor sink (edge_runner.http.logsink), on real pipes and files:
the event loop never waits for a slow reader, lines arrive whole and in order even
with another writer on the same pipe, a backlog past its bound is dropped and
counted, a reader that is gone costs nothing, and close writes what waits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_api.logs import JsonFormatter
from edge_runner.http.accesslog import AccessLog
from edge_runner.http.logsink import PIPE_CHUNK, FdSink, chunks, open_sink


def lines(count: int, start: int = 0, width: int = 100) -> str:
    return "".join(f"{i:08d} {'x' * width}\n" for i in range(start, start + count))


def read_all(fd: int) -> bytes:
    """Everything written to the pipe until its last writer closed."""
    parts = []
    while part := os.read(fd, 1 << 16):
        parts.append(part)
    return b"".join(parts)


@contextlib.contextmanager
def pipe() -> Iterator[tuple[int, io.TextIOWrapper]]:
    """A pipe's read end and its write end as a text stream (what stderr is in a pod)."""
    read_fd, write_fd = os.pipe()
    stream = open(write_fd, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        yield read_fd, stream
    finally:
        with contextlib.suppress(OSError):
            stream.close()
        os.close(read_fd)


@given(st.lists(st.text(st.characters(blacklist_characters="\n", codec="utf-8"),
                           max_size=300), max_size=60),
       st.integers(1, 600))
def test_chunks_are_whole_lines_within_the_limit(texts: list[str], limit: int) -> None:
    data = "".join(t + "\n" for t in texts).encode()
    pieces = chunks(data, limit)
    assert b"".join(pieces) == data
    for piece in pieces:
        assert piece.endswith(b"\n") or not data
        # over the limit only when it is a single line (a line longer than the limit)
        assert len(piece) <= limit or piece.count(b"\n") == 1


def test_the_loop_never_waits_for_a_reader_that_does_not_read() -> None:
    """The guarantee the writer thread gave: a full pipe holds lines back, not the loop."""

    async def scenario(sink: FdSink) -> float:
        slowest = 0.0
        for batch in range(30):  # 30 x 109 KB: far more than the pipe holds, within the backlog
            started = time.perf_counter()
            sink.write(lines(1000, batch * 1000))
            slowest = max(slowest, time.perf_counter() - started)
        assert sink.dropped == 0
        return slowest

    with pipe() as (read_fd, stream):
        sink = open_sink(stream)
        assert sink is not None
        reader = threading.Thread(target=lambda: received.append(read_all(read_fd)))
        received: list[bytes] = []
        loop = asyncio.new_event_loop()
        try:
            slowest = loop.run_until_complete(scenario(sink))
            reader.start()  # now the reader starts reading; the loop sends the rest
            sink.close()
        finally:
            loop.close()
        stream.close()
        reader.join(timeout=30)
    # A blocking write of a 100 KiB batch into a full pipe would wait for the reader,
    # which was not reading at all: the loop would never have come back.
    assert slowest < 5
    got = received[0].decode().splitlines()
    assert [int(line.split()[0]) for line in got] == list(range(30_000))


def test_another_writer_never_lands_inside_a_line() -> None:
    """Records from another thread, written to the same pipe the usual blocking way,
    while the loop's lines wait for a slow reader: every line read is one of theirs or
    one of ours, whole."""
    with pipe() as (read_fd, stream):
        sink = open_sink(stream)
        assert sink is not None
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(read_all(read_fd)))
        reader.start()

        def other_writer() -> None:
            for i in range(3000):
                stream.write(f"record {i} {'y' * 150}\n")
                stream.flush()

        other = threading.Thread(target=other_writer)

        async def scenario() -> None:
            other.start()
            for batch in range(30):
                sink.write(lines(500, batch * 500, width=250))
                await asyncio.sleep(0)
            while other.is_alive():
                await asyncio.sleep(0.01)

        asyncio.run(scenario())
        sink.close()
        stream.close()
        reader.join(timeout=30)
    ours, theirs = [], []
    for line in received[0].decode().splitlines():
        if line.startswith("record "):
            assert line.endswith("y" * 150), line
            theirs.append(int(line.split()[1]))
        else:
            number, filler = line.split()
            assert filler == "x" * 250, line
            ours.append(int(number))
    assert ours == list(range(15_000))
    assert theirs == list(range(3000))


def test_past_the_backlog_lines_are_dropped_counted_and_reported(
        caplog: pytest.LogCaptureFixture) -> None:
    told: list[int] = []

    async def scenario(sink: FdSink, read_fd: int) -> None:
        for batch in range(20):
            sink.write(lines(100, batch * 100))  # never read meanwhile
        assert sink.dropped > 0
        assert sum(told) == sink.dropped
        while sink.dropped and sink._waiting:
            os.read(read_fd, 1 << 16)
            await asyncio.sleep(0.001)

    with pipe() as (read_fd, stream), caplog.at_level(logging.WARNING):
        os.set_blocking(read_fd, False)
        own = os.open(f"/proc/self/fd/{stream.fileno()}", os.O_WRONLY | os.O_NONBLOCK)
        sink = FdSink(own, "utf-8", owned=True, chunk=PIPE_CHUNK, dropped=told.append,
                      max_backlog=64 * 1024)
        asyncio.run(scenario(sink, read_fd))
        sink.close()
    assert any(f"{sum(told)} access log lines were dropped" in r.getMessage()
               for r in caplog.records)


def test_a_reader_that_is_gone_drops_lines_without_an_error(
        caplog: pytest.LogCaptureFixture) -> None:
    read_fd, write_fd = os.pipe()
    with open(write_fd, "w", encoding="utf-8") as stream, caplog.at_level(logging.WARNING):
        sink = open_sink(stream)
        assert sink is not None
        os.close(read_fd)  # the reader is gone: EPIPE from now on
        sink.write(lines(10))
        sink.write(lines(5))
        assert sink.dropped == 15
        sink.close()
    assert any("cannot be written" in r.getMessage() for r in caplog.records)


def test_a_regular_file_gets_every_line(tmp_path: Path) -> None:
    path = tmp_path / "log"
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("before\n")
        stream.flush()
        sink = open_sink(stream)
        assert sink is not None
        sink.write(lines(3000))
        sink.close()
        stream.write("after\n")  # the stream's own offset moved with the sink's writes
    got = path.read_text().splitlines()
    assert got[0] == "before" and got[-1] == "after"
    assert [int(line.split()[0]) for line in got[1:-1]] == list(range(3000))


def test_a_stream_without_a_descriptor_has_no_sink() -> None:
    assert open_sink(io.StringIO()) is None


def test_the_access_log_writes_to_its_pipe_from_the_loop_and_loses_nothing() -> None:
    """AccessLog end to end on a pipe: no writer thread, every line, in order."""
    with pipe() as (read_fd, stream):
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(read_all(read_fd)))
        reader.start()
        root = logging.getLogger()
        saved, level = root.handlers[:], root.level
        handler = logging.StreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        root.handlers[:] = [handler]
        root.setLevel(logging.INFO)

        async def scenario() -> AccessLog:
            log = AccessLog(interval=0.01)
            for i in range(2000):
                log.request("GET", f"/{i}", 200, str(i), "f", "f/0", 0.001, "ok")
                if i % 100 == 0:
                    await asyncio.sleep(0)
            return log

        try:
            log = asyncio.run(scenario())
            assert log._writer is None
            log.close()
        finally:
            root.handlers[:] = saved
            root.setLevel(level)
        stream.close()
        reader.join(timeout=30)
    ids = [json.loads(line)["request_id"] for line in received[0].decode().splitlines()]
    assert ids == [str(i) for i in range(2000)]


def test_a_sink_dropped_without_close_releases_its_descriptor() -> None:
    with pipe() as (_read_fd, stream):
        sink = open_sink(stream)
        assert sink is not None
        fd = sink.fd
        assert fd != stream.fileno()  # its own description
        os.fstat(fd)
        del sink
        gc.collect()
        with pytest.raises(OSError):
            os.fstat(fd)
