"""Hostile clients against a real runner over raw sockets (issue #4).

Oversized and too many headers (431), slowloris heads and stalled bodies (408
and a closed connection within the configured bound, while others are served),
bodies longer than announced (the rest is a malformed next request: 400), and
more connections than allowed (503).  The runner stays up throughout.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from edge_runner.abi.envelope import decode_request
from support.guests import constant_wat, echo_wat, write_function
from support.runner import RunnerProcess, wait_until

HEAD_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
#: uvloop's timers have millisecond resolution on a cached clock: they may fire a little early.
EARLY = 0.01
#: Scheduling slack on top of a timeout (docs/http.md: 408 and closed "within" it).
MARGIN = 0.5
MAX_CONNECTIONS = 20


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    folder = tmp_path_factory.mktemp("clients")
    write_function(folder, "healthy", constant_wat(b"fine"))
    write_function(folder, "echo", echo_wat())
    args = ["--head-timeout", str(HEAD_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT),
            "--max-connections", str(MAX_CONNECTIONS)]
    with RunnerProcess(folder, extra_args=args) as process:
        yield process


def _connect(runner: RunnerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", runner.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response (head, body) from a keep-alive connection."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def _status(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def _served(runner: RunnerProcess, name: str) -> int:
    pool = runner.functions()[name]["pool"]
    assert isinstance(pool, dict)
    return int(str(pool["served"]))


def test_oversized_header_is_431_and_closed(runner: RunnerProcess) -> None:
    with _connect(runner) as sock:
        sock.sendall(b"GET /healthy HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 40_000 + b"\r\n\r\n")
        raw = _read_all(sock)
    assert _status(raw) == 431
    assert b"application/problem+json" in raw
    assert runner.client.get("/healthy").text == "fine"


def test_a_never_ending_header_is_cut_off(runner: RunnerProcess) -> None:
    with _connect(runner) as sock:
        sock.sendall(b"GET /healthy HTTP/1.1\r\nx-endless: ")
        sent = 0
        # The server reads 32 KiB, answers 431 and closes; our sends fail once the
        # kernel's socket buffers (a few MiB on loopback) are full or reset.
        with pytest.raises(OSError):
            while sent < 64 * 2**20:
                sock.sendall(b"b" * 65536)
                sent += 65536
    assert runner.client.get("/healthy").text == "fine"


def test_too_many_headers_is_431(runner: RunnerProcess) -> None:
    headers = b"".join(b"x-h%d: v\r\n" % i for i in range(150))
    with _connect(runner) as sock:
        sock.sendall(b"GET /healthy HTTP/1.1\r\nhost: x\r\n" + headers + b"\r\n")
        raw = _read_all(sock)
    assert _status(raw) == 431
    assert b"more than 100 request headers" in raw


def test_slowloris_head_is_408_within_the_timeout_while_others_are_served(
    runner: RunnerProcess,
) -> None:
    request = b"GET /healthy HTTP/1.1\r\nhost: x\r\nx-slow: " + b"s" * 200 + b"\r\n\r\n"
    closed_after: list[float] = []
    received: list[bytes] = []

    def drip() -> None:
        with _connect(runner) as sock:
            started = time.monotonic()
            try:
                for byte in request:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)  # the hostile client's own pace, not a wait in the test
            except OSError:
                pass
            received.append(_read_all(sock))
            closed_after.append(time.monotonic() - started)

    slow = threading.Thread(target=drip)
    slow.start()
    while slow.is_alive():
        assert runner.client.get("/healthy").text == "fine"
    slow.join()
    assert _status(received[0]) == 408
    assert HEAD_TIMEOUT - EARLY <= closed_after[0] < HEAD_TIMEOUT + MARGIN, closed_after


@pytest.mark.parametrize("together", [False, True], ids=["after", "pipelined"])
def test_a_stalled_head_after_a_served_request_is_408_within_the_timeout(
    runner: RunnerProcess, together: bool,
) -> None:
    """On a keep-alive connection the next head's timer runs from its first byte: sent
    after the first answer, or in the same write as the first request (pipelined)."""
    first = b"GET /healthy HTTP/1.1\r\nhost: x\r\n\r\n"
    partial = b"GET /healthy HTTP/1.1\r\nhost: x\r\nx-stalled: "
    with _connect(runner) as sock:
        if together:
            started = time.monotonic()
            sock.sendall(first + partial)
            head, body = _read_response(sock)
        else:
            sock.sendall(first)
            head, body = _read_response(sock)
            started = time.monotonic()
            sock.sendall(partial)
        received = _read_all(sock)
        elapsed = time.monotonic() - started
    assert (_status(head), body) == (200, b"fine")
    assert _status(received) == 408
    assert HEAD_TIMEOUT - EARLY <= elapsed < HEAD_TIMEOUT + MARGIN, elapsed


def test_idle_connection_without_a_request_is_closed(runner: RunnerProcess) -> None:
    with _connect(runner) as sock:
        started = time.monotonic()
        received = _read_all(sock)
        elapsed = time.monotonic() - started
    assert received == b""
    assert HEAD_TIMEOUT - EARLY <= elapsed < HEAD_TIMEOUT + MARGIN, elapsed


def test_stalled_body_is_408_and_never_reaches_the_guest(runner: RunnerProcess) -> None:
    before = _served(runner, "echo")
    with _connect(runner) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")
        raw = _read_all(sock)
        elapsed = time.monotonic() - started
    assert _status(raw) == 408
    assert BODY_TIMEOUT - EARLY <= elapsed < BODY_TIMEOUT + MARGIN, elapsed
    assert _served(runner, "echo") == before


def test_body_longer_than_announced_is_not_passed_on(runner: RunnerProcess) -> None:
    head = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n"
    with _connect(runner) as sock:
        sock.sendall(head + b"hello")
        first, envelope = _read_response(sock)
        assert _status(first) == 200
        assert decode_request(envelope)[5] == b"hello"
        sock.sendall(b"SMUGGLED / HTTP/1.1\r\n\r\n")  # the surplus: a malformed request
        assert _status(_read_all(sock)) == 400
    with _connect(runner) as sock:  # all in one packet: refused as a whole, connection closed
        sock.sendall(head + b"helloSMUGGLED / HTTP/1.1\r\n\r\n")
        assert _status(_read_all(sock)) == 400
    assert runner.client.get("/healthy").text == "fine"


def test_connections_over_the_limit_get_503_until_slow_ones_are_cut(
    runner: RunnerProcess,
) -> None:
    idle = [_connect(runner) for _ in range(MAX_CONNECTIONS)]
    try:
        wait_until(lambda: _first_status(runner) == 503, timeout=HEAD_TIMEOUT,
                   what="503 while the idle connections are open")
        # The head timeout closes the idle ones; the runner serves again.
        wait_until(lambda: _first_status(runner) == 200, timeout=HEAD_TIMEOUT + 2,
                   what="served again")
    finally:
        for sock in idle:
            sock.close()
    assert runner.alive()


def _first_status(runner: RunnerProcess) -> int:
    with _connect(runner) as sock:
        sock.sendall(b"GET /healthy HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        return _status(_read_all(sock))
