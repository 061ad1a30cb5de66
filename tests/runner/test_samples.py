"""The sample functions served by a real runner process over HTTP (R1, R4)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx

from support.runner import RunnerProcess, metric_value


def test_hello_world_get(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.get("/hello")
    assert response.status_code == 200
    assert response.text == "Hello, world!"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert len(response.headers["x-request-id"]) >= 16


def test_hello_world_query_and_header_echo(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.get(
        "/hello", params={"name": "Ada"}, headers={"x-echo": "ping", "x-request-id": "req-42"}
    )
    assert response.text == "Hello, Ada!"
    assert response.headers["x-echo"] == "ping"
    assert response.headers["x-request-id"] == "req-42"


def test_hello_world_post_json(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.post("/hello", json={"name": "Grace"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"message": "Hello, Grace!"}
    bad = samples_runner.client.post("/hello", content=b'{"name": ')
    assert bad.status_code == 400


def test_method_not_allowed(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.delete("/hello")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD, POST"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 405
    assert problem["request_id"] == response.headers["x-request-id"]


def test_no_route(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.get("/nowhere")
    assert response.status_code == 404
    assert response.json()["type"].endswith("/no-route")


def test_head_has_no_body(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.head("/hello")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len("Hello, world!"))


def test_wagi(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.post(
        "/wagi/sub", params={"name": "Ada"}, content=b"0123456789", headers={"x-echo": "e"}
    )
    assert response.status_code == 200, response.text
    assert response.text.startswith("Hello, Ada!\n")
    assert "body: 10 bytes" in response.text
    assert "/wagi/sub" in response.text
    assert response.headers["x-echo"] == "e"


def test_hop_by_hop_headers_are_not_forwarded(samples_runner: RunnerProcess) -> None:
    response = samples_runner.client.get(
        "/wagi", headers={"connection": "keep-alive, x-secret", "x-secret": "s", "x-kept": "k"}
    )
    assert "HTTP_X_KEPT: k" in response.text
    assert "X_SECRET" not in response.text
    assert "HTTP_CONNECTION" not in response.text


def test_oversized_body_is_413_without_reading_it(samples_runner: RunnerProcess) -> None:
    """A Content-Length over maxRequestBytes (1 MiB) is answered before any of the body is
    sent: this client sends none and waits (the runner would wait --body-timeout, 30 s,
    for a body it tried to read)."""
    limit = 2**20
    head = (f"POST /hello HTTP/1.1\r\nhost: x\r\ncontent-length: {limit + 1}\r\n"
            "x-request-id: big-1\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", samples_runner.port), timeout=5) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer
    assert b"x-request-id: big-1" in rest

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"y" * 65536

    streamed = samples_runner.client.post("/hello", content=chunks())  # chunked, no length
    assert streamed.status_code == 413
    assert streamed.json()["function"] == "hello-world"
    assert samples_runner.client.get("/hello").status_code == 200


def test_admin_plane(samples_runner: RunnerProcess) -> None:
    assert samples_runner.admin.get("/healthz").json() == {"status": "ok"}
    functions = samples_runner.functions()
    assert functions["hello-world"]["state"] == "ready"
    assert str(functions["hello-world"]["digest"]).startswith("sha256:")
    assert functions["wagi-hello"]["abi"] == "wagi"
    # The admin port never routes to functions.
    assert samples_runner.admin.get("/hello").status_code == 404
    with httpx.Client(base_url=samples_runner.url) as client:
        before = metric_value(samples_runner.metrics(), "edge_requests_total",
                              {"function": "hello-world", "code": "200"})
        for _ in range(3):
            client.get("/hello")
    text = samples_runner.metrics()
    after = metric_value(text, "edge_requests_total", {"function": "hello-world", "code": "200"})
    assert after == before + 3
    assert metric_value(text, "edge_request_duration_seconds_count",
                        {"function": "hello-world"}) >= 3
