"""The data plane (edge_runner.http.dataplane) in process: ASGI calls on a real catalog.

Statuses, problem+json documents and header rules are those of docs/http.md; the
envelope a guest receives is docs/abi.md's.  Requests go through
``httpx.ASGITransport`` where an HTTP client is enough, and through
:func:`support.inprocess.asgi_call` where the test must see what a client cannot:
whether the body was read, exactly which headers were sent, the body of a HEAD.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from edge_runner.abi.envelope import decode_request
from edge_runner.http.dataplane import DataPlane
from edge_runner.invoke.admission import Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.catalog import Catalog
from edge_runner.invoke.policy import SharedLimits
from edge_runner.wasm.engine import WasmEngine
from support import guests
from support.guests import response_envelope
from support.inprocess import (
    PROBLEM_BASE,
    AsgiResult,
    MiB,
    RecordingExecutor,
    asgi_call,
    metric,
    route,
    serving,
    source,
)

HOST = (b"host", b"edge.test")
LIMIT = 64  # maxRequestBytes of the echo function
FRESH_ID = re.compile(rb"[0-9a-f]{24}")
#: Everything docs/http.md removes from a guest's response headers.
GUEST_HOP_BY_HOP = [
    (b"Connection", b"close"), (b"keep-alive", b"timeout=5"), (b"proxy-connection", b"close"),
    (b"proxy-authenticate", b"Basic"), (b"proxy-authorization", b"Basic eA=="),
    (b"te", b"trailers"), (b"trailer", b"x-sum"), (b"trailers", b"x-sum"),
    (b"Transfer-Encoding", b"chunked"), (b"upgrade", b"h2c"), (b"content-length", b"999"),
    (b"x-request-id", b"chosen-by-the-guest"),
]
FUNCTIONS = [
    source("echo", guests.echo_wat(), limits={"maxRequestBytes": LIMIT}),
    source("methods", guests.constant_wat(b"ok")),
    source("hop", guests.constant_wat(b"", raw=response_envelope(
        200, b"hi", [(b"x-kept", b"yes"), *GUEST_HOP_BY_HOP]))),
    source("nobody", guests.constant_wat(b"dropped", status=204)),
    source("trap", guests.trap_wat()),
    source("broken", b"\x00asm\x01\x00\x00\x00\x05"),
]
ROUTES = [
    route("echo", "/echo/{id}", "echo", path_type="Template"),
    route("methods", "/methods", "methods", methods=["PUT", "GET"]),
    route("hop", "/hop", "hop"),
    route("nobody", "/nobody", "nobody"),
    route("trap", "/trap", "trap"),
    route("broken", "/broken", "broken"),
    route("ghost", "/ghost", "ghost"),  # no such function
]


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/problem+json"
    document = response.json()
    assert isinstance(document, dict)
    assert document["request_id"] == response.headers["x-request-id"]
    return document


def envelope(body: bytes) -> dict[str, Any]:
    """What the echo guest received, decoded."""
    method, path, query, params, headers, payload = decode_request(body)
    return {"method": method, "path": path, "query": query, "params": params,
            "headers": headers, "body": payload}


def test_routing_errors_are_problem_json(engine: WasmEngine, executor: RecordingExecutor) -> None:
    async def scenario() -> list[httpx.Response]:
        async with serving(engine, executor, FUNCTIONS, ROUTES) as (app, _), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://edge.test") as client:
            return [await client.get("/nowhere"), await client.patch("/methods"),
                    await client.get("/ghost"), await client.get("/broken"),
                    await client.get("/trap")]

    missing, wrong_method, ghost, broken, trap = asyncio.run(scenario())
    assert missing.status_code == 404
    assert problem(missing) == {
        "type": PROBLEM_BASE + "no-route", "title": "No route", "status": 404,
        "detail": "no route matches GET /nowhere", "request_id": missing.headers["x-request-id"]}
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, HEAD, PUT"
    assert {k: v for k, v in problem(wrong_method).items() if k not in ("detail", "request_id")
            } == {"type": PROBLEM_BASE + "method-not-allowed", "title": "Method not allowed",
                  "status": 405}
    # A function that does not exist: final (retrying cannot help), no Retry-After.
    assert ghost.status_code == 500 and "retry-after" not in ghost.headers
    assert (problem(ghost)["type"], problem(ghost)["function"]) == (
        PROBLEM_BASE + "function-not-found", "ghost")
    # One that failed to load: 503 with Retry-After; why stays in the log and /v1/functions.
    assert (broken.status_code, broken.headers["retry-after"]) == (503, "5")
    document = problem(broken)
    assert (document["type"], document["title"], document["status"], document["function"]
            ) == (PROBLEM_BASE + "not-loaded", "Function unavailable", 503, "broken")
    assert "CompileError" not in document["detail"]
    assert trap.status_code == 502
    assert {k: v for k, v in problem(trap).items() if k not in ("detail", "request_id")} == {
        "type": PROBLEM_BASE + "trap", "title": "Function failed", "status": 502,
        "function": "trap"}


def test_an_instance_over_the_memory_budget_is_503_with_retry_after(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    tiny = MemoryBudget(limit=MiB, fraction=1.0, baseline=0, source="test")  # echo needs 64 MiB

    async def scenario() -> httpx.Response:
        async with serving(engine, executor, FUNCTIONS[:1], ROUTES[:1], shared=SharedLimits(
                budget=tiny, threads=Gate(4, 8))) as (app, _), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://edge.test") as client:
            return await client.get("/echo/1")

    response = asyncio.run(scenario())
    assert (response.status_code, response.headers["retry-after"]) == (503, "1")
    document = problem(response)
    assert (document["type"], document["title"], document["function"]) == (
        PROBLEM_BASE + "memory-budget", "Function unavailable", "echo")


def call(engine: WasmEngine, executor: RecordingExecutor, path: str, **kwargs: Any
         ) -> tuple[AsgiResult, Catalog]:
    """One raw ASGI request to a fresh data plane over FUNCTIONS and ROUTES."""
    async def scenario() -> tuple[AsgiResult, Catalog]:
        async with serving(engine, executor, FUNCTIONS, ROUTES) as (app, catalog):
            return await asgi_call(app, path, **kwargs), catalog

    return asyncio.run(scenario())


def test_a_declared_body_over_the_limit_is_413_before_any_of_it_is_read(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    result, catalog = call(engine, executor, "/echo/1", method="POST", refuse_receive=True,
                           headers=[HOST, (b"content-length", str(LIMIT + 1).encode())])
    assert (result.status, result.received) == (413, 0)
    document = result.problem()
    assert (document["type"], document["title"], document["status"], document["function"]) == (
        PROBLEM_BASE + "body-too-large", "Request body too large", 413, "echo")
    assert catalog.snapshot.functions["echo"].describe()["served"] == 0


def test_a_streamed_body_over_the_limit_is_413_and_the_rest_is_not_read(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    result, catalog = call(engine, executor, "/echo/1", method="POST",
                           headers=[HOST, (b"transfer-encoding", b"chunked")],
                           chunks=[b"a" * 40, b"b" * 40, b"c" * 40])
    assert result.status == 413
    assert result.received == 2  # the chunk that crossed the limit was the last one read
    assert result.problem()["type"] == PROBLEM_BASE + "body-too-large"
    assert catalog.snapshot.functions["echo"].describe()["served"] == 0


def test_a_body_at_the_limit_reaches_the_guest(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    result, _ = call(engine, executor, "/echo/1", method="POST",
                     headers=[HOST, (b"content-length", str(LIMIT).encode())],
                     chunks=[b"a" * 30, b"b" * (LIMIT - 30)])
    assert result.status == 200
    assert envelope(result.body)["body"] == b"a" * 30 + b"b" * (LIMIT - 30)


def test_the_guest_receives_path_query_params_headers_and_body(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    sent = [
        HOST, (b"x-custom", b"1"), (b"connection", b"keep-alive, X-Drop"), (b"x-drop", b"gone"),
        (b"keep-alive", b"timeout=5"), (b"te", b"trailers"), (b"upgrade", b"h2c"),
        (b"proxy-authorization", b"Basic eA=="), (b"proxy-connection", b"keep-alive"),
        (b"trailer", b"x-sum"), (b"content-length", b"5"), (b"authorization", b"Bearer t"),
        (b"x-forwarded-for", b"10.0.0.1"), (b"x-custom", b"2"), (b"x-request-id", b"client-1"),
    ]
    result, catalog = call(engine, executor, "/echo/a b", raw_path=b"/echo/a%20b",
                           method="POST", query=b"x=1&y=%2F", headers=sent, chunks=[b"hello"])
    assert result.status == 200
    seen = envelope(result.body)
    assert (seen["method"], seen["path"], seen["query"], seen["body"]) == (
        b"POST", b"/echo/a%20b", b"x=1&y=%2F", b"hello")
    assert seen["params"] == [(b"id", b"a b")]  # the capture, percent-decoded
    headers = seen["headers"]
    assert [h for h in headers if h[0] != b"x-request-id"] == [
        HOST, (b"x-custom", b"1"), (b"authorization", b"Bearer t"),
        (b"x-forwarded-for", b"10.0.0.1"), (b"x-custom", b"2")]
    assert [v for n, v in headers if n == b"x-request-id"] == [b"client-1"]
    assert metric(catalog, "edge_requests_total", function="echo", code="200") == 1


def test_hop_by_hop_headers_of_a_guest_response_are_dropped(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    result, _ = call(engine, executor, "/hop", headers=[HOST, (b"x-request-id", b"r-1")])
    assert (result.status, result.body) == (200, b"hi")
    assert sorted(result.headers) == [
        (b"content-length", b"2"), (b"content-type", b"text/plain; charset=utf-8"),
        (b"x-kept", b"yes"), (b"x-request-id", b"r-1")]


def test_a_204_has_no_body_and_no_content_length(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    result, _ = call(engine, executor, "/nobody")
    assert (result.status, result.body) == (204, b"")
    assert result.header(b"content-length") == []
    assert len(result.header(b"x-request-id")) == 1


def test_head_gets_the_headers_of_get_and_no_body(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    same_id = [HOST, (b"x-request-id", b"same")]
    get, _ = call(engine, executor, "/echo/1", headers=same_id)
    head, _ = call(engine, executor, "/echo/1", method="HEAD", headers=same_id)
    assert (get.status, head.status) == (200, 200)
    assert envelope(get.body)["method"] == b"GET"
    assert head.body == b""
    assert head.header(b"content-length") == [str(len(get.body)).encode()]
    # Same length as GET's envelope: the guest was asked "GET", not "HEAD".
    assert sorted(head.headers) == sorted(get.headers)


@pytest.mark.parametrize(("sent", "effective"), [
    ([b"abc-123._:XYZ"], b"abc-123._:XYZ"),
    ([b"a" * 128], b"a" * 128),
    ([b"bad id"], None),
    ([b"caf\xc3\xa9"], None),
    ([b"a" * 129], None),
    ([b""], None),
    ([b"first", b"bad!", b"second", b"bad?"], b"second"),  # the last valid one
    ([b"ok\n"], None),
], ids=["valid", "128", "space", "non-ascii", "129", "empty", "several", "newline"])
def test_a_valid_client_request_id_is_kept_and_any_other_replaced(
    engine: WasmEngine, executor: RecordingExecutor, sent: list[bytes], effective: bytes | None
) -> None:
    result, _ = call(engine, executor, "/echo/1",
                     headers=[HOST, *((b"x-request-id", value) for value in sent)])
    assert result.status == 200
    [answered] = result.header(b"x-request-id")
    if effective is None:
        assert FRESH_ID.fullmatch(answered), answered
    else:
        assert answered == effective
    seen = [v for n, v in envelope(result.body)["headers"] if n == b"x-request-id"]
    assert seen == [answered]  # the guest sees the effective id, once


def test_fresh_request_ids_differ(engine: WasmEngine, executor: RecordingExecutor) -> None:
    async def scenario() -> list[bytes]:
        async with serving(engine, executor, FUNCTIONS, ROUTES) as (app, _):
            return [(await asgi_call(app, "/nowhere")).header(b"x-request-id")[0]
                    for _ in range(3)]

    ids = asyncio.run(scenario())
    assert len(set(ids)) == 3 and all(FRESH_ID.fullmatch(i) for i in ids)


def test_a_client_that_leaves_before_its_body_runs_nothing(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    result, catalog = call(engine, executor, "/echo/1", method="POST", disconnect=True)
    assert result.received == 1
    pool = catalog.snapshot.functions["echo"].describe()
    assert (pool["served"], pool["coldStarts"]) == (0, 0)
    assert metric(catalog, "edge_requests_total", function="echo", code="499") == 1


def test_lifespan_startup_and_shutdown_complete(
    engine: WasmEngine, executor: RecordingExecutor
) -> None:
    async def scenario() -> list[str]:
        async with serving(engine, executor, [], []) as (app, _):
            return await lifespan(app)

    assert asyncio.run(scenario()) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def lifespan(app: DataPlane) -> list[str]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await app({"type": "lifespan"}, receive, send)
    return sent
