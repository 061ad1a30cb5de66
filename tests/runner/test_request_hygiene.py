"""What the runner does with a request before any guest runs, on a real runner process.

Over raw sockets (an HTTP client would clean the path itself): path
normalization before routing and auth (docs/http.md), two Host headers, a
``%0A`` in the path in the text log format, and a guest whose response headers
are too big in total (502).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import yaml

from edge_runner.abi.base import MAX_RESPONSE_HEADER_BYTES
from edge_runner.abi.envelope import decode_request
from support.guests import WASI, echo_wat, write_function
from support.runner import RunnerProcess, wait_until

KEY = "hygiene-key"


def _big_header_wagi(size: int) -> str:
    text = "content-type: text/plain\\nx-big: " + "a" * size + "\\n\\nok"
    length = len(text) - 4  # the two "\\n" escapes are one byte each
    return f"""(module
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  (data (i32.const 1024) "{text}")
  (func (export "_start")
    (i32.store (i32.const 16) (i32.const 1024)) (i32.store (i32.const 20) (i32.const {length}))
    (drop (call $write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))))"""


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    folder = tmp_path_factory.mktemp("hygiene")
    write_function(folder, "public", echo_wat(), path_type="Prefix")
    write_function(folder, "admin", echo_wat(), route=False)
    write_function(folder, "bighead", _big_header_wagi(MAX_RESPONSE_HEADER_BYTES + 1), abi="wagi")
    write_function(folder, "okhead", _big_header_wagi(MAX_RESPONSE_HEADER_BYTES // 2), abi="wagi")
    (folder / "admin-route.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "admin-keys"},
         "stringData": {"ops": KEY}},
        {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
         "metadata": {"name": "admin"},
         "spec": {"auth": {"apiKey": {"secretRef": {"name": "admin-keys"}}},
                  "rules": [{"match": {"path": "/admin"}, "function": "admin"}]}}]))
    with RunnerProcess(folder, extra_args=["--log-format", "text"]) as process:
        yield process


def _request(runner: RunnerProcess, target: bytes, headers: bytes = b"Host: x\r\n"
             ) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", runner.port), timeout=10) as sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\n" + headers
                     + b"Connection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _guest_path(body: bytes) -> bytes:
    return decode_request(body)[1]


@pytest.mark.parametrize(("target", "seen"), [
    (b"/admin/../public", b"/public"),
    (b"/admin/%2e%2E/public/x", b"/public/x"),
    (b"/public/./a//b/", b"/public/a/b/"),
    (b"//public", b"/public"),
    (b"/%70ublic", b"/public"),
])
def test_paths_are_normalized_before_routing(runner: RunnerProcess, target: bytes,
                                             seen: bytes) -> None:
    status, body = _request(runner, target)
    assert status == 200
    assert _guest_path(body) == seen


@pytest.mark.parametrize("target", [
    b"/admin%2F..%2Fpublic", b"/public%2fx", b"/public%5C..%5Cadmin", b"/..", b"/public/../../x",
])
def test_encoded_separators_and_climbing_above_the_root_are_400(runner: RunnerProcess,
                                                               target: bytes) -> None:
    status, body = _request(runner, target)
    assert status == 400
    assert b"/problems/bad-request" in body


def test_auth_applies_to_the_normalized_path(runner: RunnerProcess) -> None:
    assert _request(runner, b"/public/../admin")[0] == 401
    assert _request(runner, b"/%61dmin")[0] == 401
    assert _request(runner, b"/%61dmin", b"Host: x\r\nx-api-key: " + KEY.encode() + b"\r\n"
                    )[0] == 200


def test_two_host_headers_are_400(runner: RunnerProcess) -> None:
    assert _request(runner, b"/public", b"Host: a.example\r\nHost: b.example\r\n")[0] == 400
    assert _request(runner, b"/public", b"Host: a.example\r\n")[0] == 200


def test_a_newline_in_the_path_cannot_forge_a_log_line(runner: RunnerProcess) -> None:
    status, _ = _request(runner, b"/public/%0Aforged-line%20INFO%20admin%20login")
    assert status == 200
    # Access lines are written in batches (--access-log-interval): wait for this one.
    wait_until(lambda: "/public/\\nforged-line" in runner.log(), timeout=10,
               what="the escaped access line")
    lines = runner.log().splitlines()
    assert not any(line.startswith("forged-line") for line in lines)


def test_response_headers_over_the_total_cap_are_502(runner: RunnerProcess) -> None:
    assert _request(runner, b"/okhead")[0] == 200
    status, body = _request(runner, b"/bighead")
    assert status == 502
    assert b"bad-response" in body


