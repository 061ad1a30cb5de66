"""The data port's fast path (edge_runner.http.fastpath) on a real runner process.

Over raw sockets, so the exact bytes on the wire can be compared: a request
answered on the parser's stack and the same request sent the ASGI way (a
chunked empty body makes it take that way) get byte-identical responses; a
pipelined mix of both keeps its order; ``Connection: close``, HTTP/1.0 and HEAD
are honoured; a guest that outgrows the inline budget still answers (from a
worker thread); and errors decided by the runner (404, 405) are answered by
the fast path too.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest
import yaml

from support.guests import echo_wat, write_function
from support.inprocess import fuel_wat
from support.runner import RunnerProcess

#: Answers every request, and so each of a pipelined batch.
PIPELINED = 20


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    folder = tmp_path_factory.mktemp("fastpath")
    write_function(folder, "echo", echo_wat())
    # ~2,000 loop iterations per request byte: several million fuel, far over the
    # inline budget (1,000,000), so every call is preempted and re-run on a thread.
    write_function(folder, "heavy", fuel_wat(per_byte=2000))
    (folder / "get-only.yaml").write_text(yaml.safe_dump({
        "apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
        "metadata": {"name": "get-only"},
        "spec": {"rules": [{"match": {"path": "/get-only", "methods": ["GET"]},
                            "function": "echo"}]}}))
    with RunnerProcess(folder) as process:
        yield process


def _exchange(runner: RunnerProcess, data: bytes, responses: int) -> list[bytes]:
    """Send ``data`` in one write; read ``responses`` complete responses (Content-Length)."""
    with socket.create_connection(("127.0.0.1", runner.port), timeout=10) as sock:
        sock.sendall(data)
        raw = b""
        found: list[bytes] = []
        while len(found) < responses:
            head_end = raw.find(b"\r\n\r\n")
            if head_end >= 0:
                head = raw[:head_end].lower()
                length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0]) \
                    if b"content-length: " in head and not head.startswith(b"http/1.1 204") \
                    else 0
                if data.startswith(b"HEAD "):
                    length = 0
                end = head_end + 4 + length
                if len(raw) >= end:
                    found.append(raw[:end])
                    raw = raw[end:]
                    continue
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(found)} responses: {raw!r}"
            raw += chunk
        assert raw == b""
        return found


def _get(path: str, request_id: str, extra: bytes = b"") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: fast.test\r\nX-Request-Id: {request_id}\r\n"
            .encode() + extra + b"\r\n")


def _chunked_get(path: str, request_id: str) -> bytes:
    """The same GET with an empty chunked body: it must take the ASGI way."""
    return _get(path, request_id, b"Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n"


def test_fast_and_asgi_answers_are_byte_identical(runner: RunnerProcess) -> None:
    [fast] = _exchange(runner, _get("/echo", "same-id"), 1)
    [slow] = _exchange(runner, _chunked_get("/echo", "same-id"), 1)
    assert fast.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"x-request-id: same-id\r\n" in fast
    assert fast == slow


def test_a_pipelined_mix_is_answered_in_order(runner: RunnerProcess) -> None:
    requests = [(_chunked_get if i % 3 == 1 else _get)("/echo", f"id-{i}")
                for i in range(PIPELINED)]
    answers = _exchange(runner, b"".join(requests), PIPELINED)
    for i, answer in enumerate(answers):
        assert f"x-request-id: id-{i}\r\n".encode() in answer, (i, answer)
        assert answer.startswith(b"HTTP/1.1 200 ")


def test_connection_close_and_http_1_0_close_the_connection(runner: RunnerProcess) -> None:
    for request in (_get("/echo", "c1", b"Connection: close\r\n"),
                    b"GET /echo HTTP/1.0\r\nHost: fast.test\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", runner.port), timeout=10) as sock:
            sock.sendall(request)
            raw = b""
            while chunk := sock.recv(65536):  # ends: the server closed the connection
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nconnection: close\r\n" in raw.partition(b"\r\n\r\n")[0] + b"\r\n"


def test_head_has_the_length_of_get_and_no_body(runner: RunnerProcess) -> None:
    head_request = b"HEAD /echo HTTP/1.1\r\nHost: fast.test\r\nX-Request-Id: h\r\n\r\n"
    [head] = _exchange(runner, head_request, 1)
    [get] = _exchange(runner, _get("/echo", "h"), 1)
    assert head == get.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"


def test_a_guest_over_the_inline_budget_answers_from_a_thread(runner: RunnerProcess) -> None:
    answers = _exchange(runner, b"".join(_get("/heavy", f"h{i}") for i in range(3)), 3)
    assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"done") for a in answers)
    pool = httpx.get(f"{runner.admin_url}/v1/functions").json()
    heavy = next(f for f in pool["functions"] if f["name"] == "heavy")
    assert heavy["pool"]["inline"] is False  # demoted: needs more fuel than inline calls get


def test_runner_decided_errors_on_the_fast_path(runner: RunnerProcess) -> None:
    answers = _exchange(runner, _get("/nowhere", "n1")
                        + b"DELETE /get-only HTTP/1.1\r\nHost: fast.test\r\n\r\n", 2)
    assert answers[0].startswith(b"HTTP/1.1 404 ")
    assert b"content-type: application/problem+json\r\n" in answers[0]
    assert answers[1].startswith(b"HTTP/1.1 405 ")


def test_a_refused_request_with_a_body_keeps_the_connection_in_step(
        runner: RunnerProcess) -> None:
    """404 and 400 for requests with bodies, then a GET on the same connection: the
    bodies are read past (the ASGI way), not parsed as requests, and the order holds."""
    body = b"x" * 3000
    refused = [
        b"POST /nowhere HTTP/1.1\r\nHost: fast.test\r\nContent-Length: 3000\r\n\r\n" + body,
        b"POST /a/../../b HTTP/1.1\r\nHost: fast.test\r\nContent-Length: 3000\r\n\r\n" + body,
        b"POST /nowhere HTTP/1.1\r\nHost: fast.test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n",
    ]
    answers = _exchange(runner, b"".join(refused) + _get("/echo", "after"), 4)
    assert [a.split(b" ", 2)[1] for a in answers] == [b"404", b"400", b"404", b"200"]
    assert b"x-request-id: after\r\n" in answers[3]


def test_answers_before_a_malformed_request_are_sent_before_its_400(
        runner: RunnerProcess) -> None:
    """Pipelined: two good requests, then a malformed one: two answers, then 400, close."""
    with socket.create_connection(("127.0.0.1", runner.port), timeout=10) as sock:
        sock.sendall(_get("/echo", "g1") + _get("/echo", "g2") + b"GARBAGE\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):  # ends: the server closed the connection
            raw += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", raw) == [b"200", b"200", b"400"]
    assert raw.index(b"x-request-id: g1") < raw.index(b"x-request-id: g2")
