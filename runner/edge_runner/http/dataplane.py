"""The data plane: a plain ASGI app that routes every request to a function.

Per request: read the snapshot of the catalog once, route (404/405), read the
body up to ``maxRequestBytes`` (413 without buffering the rest), hand the
request (:class:`~edge_runner.abi.HttpRequest`) to the function's pool, whose
ABI executor (:mod:`edge_runner.abi`) encodes and runs it, and send the
response with hop-by-hop headers removed, a detected ``content-type`` when the
guest set none, and ``x-request-id``.  Every error is problem+json.  A client
that leaves before its body arrived never reaches the guest.  Limits on the
request head and on slow clients live in :mod:`edge_runner.http.guard`.

Deliberately not FastAPI: this is the hot path, and nothing here needs
dependency injection or validation; the admin plane (:mod:`edge_runner.http.admin`)
is FastAPI.  The access line of each request is queued to
:mod:`edge_runner.http.accesslog`, which writes lines in batches.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from edge_api.routing import CompiledRule, MethodNotAllowed, RouteTable
from edge_runner.abi import HttpRequest
from edge_runner.errors import InvocationError
from edge_runner.http import content_type
from edge_runner.http.accesslog import AccessLog
from edge_runner.http.auth import AUTH_PREFIX, OPEN, Allowed, AuthTable
from edge_runner.http.paths import PathRejected, normalize
from edge_runner.http.problems import Problem, from_invocation_error, problem
from edge_runner.invoke.catalog import Catalog
from edge_runner.invoke.pool import FunctionRuntime, Preempted
from edge_runner.metrics import RunnerMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("edge_runner.http.dataplane")
#: Scope key where a request :meth:`DataPlane.answer_now` could not finish travels to
#: the ASGI call: what :meth:`DataPlane.begin` found, and the seconds an inline attempt
#: spent before it was preempted (None: no attempt).
_SCOPE_PENDING = "edge_runner.pending"

HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate",
        b"proxy-authorization", b"te", b"trailer", b"trailers", b"transfer-encoding",
        b"upgrade", b"content-length",
    }
)
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Failures retried once for an idempotent method: wasmtime could not create the
#: instance and no guest code ran (possibly transient, e.g. mmap failed).  A
#: deterministic refusal (initial memory over the limit, reason ``memory``) is not.
RETRIED = frozenset({"instantiate"})
#: Statuses whose responses carry no body and no content-length.
NO_BODY = frozenset({204, 304})
#: Status for the metrics of a request whose client left before its body arrived.
CLIENT_CLOSED = 499
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    """The client went away (or was cut off) before its body arrived: run nothing."""


def _problem_slug(body: bytes) -> str:
    """The short name of a problem+json error ("no-route", "timeout", ...)."""
    marker = body.find(b"/problems/")
    if marker < 0:
        return "error"
    end = body.find(b'"', marker)
    return body[marker + 10:end].decode(errors="replace")


def _new_request_id() -> str:
    # Not a secret, just unique: getrandbits avoids a getrandom() syscall per request.
    return f"{random.getrandbits(96):024x}"


#: Host header values seen lately and their host names: a runner serves few hosts.
_HOSTS: dict[bytes, str] = {}
_HOSTS_MAX = 1024


def _host_of(value: bytes) -> str:
    """The lower-case host name of a Host header value (port removed)."""
    host = _HOSTS.get(value)
    if host is not None:
        return host
    host = value.decode("latin-1").lower()
    if host.startswith("["):
        host = host.split("]", 1)[0] + "]"
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    if len(_HOSTS) >= _HOSTS_MAX:
        _HOSTS.clear()
    _HOSTS[value] = host
    return host


@dataclass(slots=True)
class Begun:
    """What the synchronous first half of a request found (:meth:`DataPlane.begin`)."""

    method: str
    path: str
    request_id: str
    started: float
    #: The answer already decided (400, 404, 405, 401/403, 413, 503 ...), or None.
    answer: Problem | None = None
    function: str = ""
    rule: CompiledRule | None = None
    params: tuple[tuple[str, str], ...] = ()
    runtime: FunctionRuntime | None = None
    admitted: Allowed = OPEN
    host: str = ""
    connection_tokens: frozenset[bytes] = frozenset()
    #: The request has a body to read (Content-Length over 0, or Transfer-Encoding):
    #: HTTP/1.1's rule, used by :meth:`DataPlane.answer_now` only (the ASGI way always
    #: reads the body, as other servers may deliver one without either header).
    has_body: bool = False


class DataPlane:
    """ASGI callable for the data port, plus :meth:`answer_now` for the fast path."""

    def __init__(self, catalog: Catalog, metrics: RunnerMetrics,
                 access_log: AccessLog | None = None) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.access_log = access_log or AccessLog()
        self._counts = metrics.request_counts
        self._lookups = self._counts.lookups
        self._table: RouteTable | None = None
        self._auth = AuthTable((), {}, {})
        self._protected = False  # any rule with auth?
        self._auth_counters: dict[tuple[str, str], Any] = {}

    # -- the two ways in ------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        pending: tuple[Begun, float | None] | None = scope.pop(_SCOPE_PENDING, None)
        if pending is None:
            begun, preempted = self.begin(scope, time.perf_counter()), None
        else:
            begun, preempted = pending
        response = begun.answer
        if response is None:
            try:
                response = await self._complete(scope, receive, begun, preempted)
            except asyncio.CancelledError:  # shutdown: the grace period ran out; try elsewhere
                await _send(send, begun.method, begun.request_id, problem(
                    503, "shutting-down", "Runner shutting down",
                    "the runner stopped before the function finished", begun.request_id,
                    headers=[(b"retry-after", b"1"), (b"connection", b"close")],
                ))
                raise
            except Exception:  # a bug of ours: answer, log, keep serving
                response = self._internal_error(begun)
        await _send(send, begun.method, begun.request_id, response)
        self._record(begun, response)

    def answer_now(self, scope: Scope) -> Problem | None:
        """Answer a request without a body at once, on the caller's stack, or None.

        The fast path (:mod:`edge_runner.http.fastpath`): routing, auth and an inline
        call (:meth:`~edge_runner.invoke.pool.FunctionRuntime.invoke_now`) need no
        waiting, so most requests are answered without an ASGI task.  The response
        comes complete (``x-request-id`` and ``content-length`` added, no body for
        HEAD), counted and logged.  None: the request must go the ASGI way (a body to
        read, a worker thread, a queue); what was done so far travels in the scope, so
        nothing is routed, counted or run twice.
        """
        begun = self.begin(scope, time.perf_counter())
        if begun.has_body:  # even a decided answer: the ASGI way reads or drops the body
            scope[_SCOPE_PENDING] = (begun, None)
            return None
        response = begun.answer
        if response is None:
            runtime = begun.runtime
            assert runtime is not None  # begin answers when there is none
            try:
                outcome = runtime.invoke_now(self._request(scope, begun, b""))
            except InvocationError as error:
                if self._retriable(error, begun):
                    scope[_SCOPE_PENDING] = (begun, None)
                    return None
                response = self._failed(error, begun)
            except Exception:  # a bug of ours: answer, log, keep serving
                response = self._internal_error(begun)
            else:
                if outcome is None or isinstance(outcome, Preempted):
                    scope[_SCOPE_PENDING] = (begun, None if outcome is None else outcome.spent)
                    return None
                response = _finish_response(outcome)
        status, headers, body = _framed(response, begun.request_id)
        self._record(begun, response)
        return status, headers, b"" if begun.method == "HEAD" else body

    # -- the first half: no waiting ---------------------------------------------------

    def begin(self, scope: Scope, started: float) -> Begun:
        """Read the head, normalize the path, route, authorize, find the function."""
        request_id = ""
        host = b""
        declared: int | None = None
        connection_tokens: set[bytes] = set()
        hosts = 0
        chunked = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if _REQUEST_ID.fullmatch(value):
                    request_id = value.decode()
            elif name == b"host":
                host = value
                hosts += 1
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                connection_tokens.update(t.strip().lower() for t in value.split(b","))
        if not request_id:
            request_id = _new_request_id()
        method: str = scope["method"]
        path: str = scope["path"]
        begun = Begun(method, path, request_id, started, has_body=chunked or bool(declared))
        try:
            path, raw_path = normalize(scope.get("raw_path") or path.encode())
            if hosts > 1:
                raise PathRejected("more than one Host header")
        except PathRejected as exc:
            begun.answer = problem(400, "bad-request", "Bad request", str(exc), request_id)
            return begun
        scope["path"] = begun.path = path
        scope["raw_path"] = raw_path
        begun.host = _host_of(host)
        begun.connection_tokens = frozenset(connection_tokens)
        self._route(scope, begun)
        if begun.answer is None and declared is not None:
            limit = begun.runtime.spec.limits.max_request_bytes  # type: ignore[union-attr]
            if declared < 0 or declared > limit:
                begun.answer = self._too_large(declared, limit, request_id, begun.function)
        return begun

    def _route(self, scope: Scope, begun: Begun) -> None:
        """Route, count and authorize ``begun``; sets its answer unless it may run."""
        method, path, request_id = begun.method, begun.path, begun.request_id
        snapshot = self.catalog.snapshot
        if snapshot.table is not self._table:
            self._table = snapshot.table
            self._auth = AuthTable(snapshot.routes, snapshot.secrets, snapshot.jwks)
            self._protected = bool(self._auth)
            self._auth_counters.clear()  # a deleted route's series are gone (Catalog.apply)
        found = snapshot.table.lookup(begun.host, method, path)
        if found is None:
            self._lookups[1] += 1
            begun.answer = problem(404, "no-route", "No route",
                                   f"no route matches {method} {path}", request_id)
            return
        if isinstance(found, MethodNotAllowed):
            self._lookups[2] += 1
            allow = ", ".join(found.allow).encode()
            begun.answer = problem(405, "method-not-allowed", "Method not allowed",
                                   f"{method} is not allowed here", request_id,
                                   headers=[(b"allow", allow)])
            return
        self._lookups[0] += 1
        rule = begun.rule = found.rule
        function = begun.function = found.function
        begun.params = found.params
        self._counts.rule(rule.route, rule.index)
        admitted = self._authorize(scope, rule, request_id)
        if not isinstance(admitted, Allowed):
            begun.answer = admitted
            return
        begun.admitted = admitted
        runtime = snapshot.functions.get(function)
        if runtime is None:
            begun.answer = _unavailable(function, function in snapshot.failures, request_id)
            return
        begun.runtime = runtime

    # -- the second half: may wait ----------------------------------------------------

    async def _complete(self, scope: Scope, receive: Receive, begun: Begun,
                        preempted: float | None) -> Problem:
        """Read the body and invoke (on a worker thread if it must)."""
        runtime = begun.runtime
        assert runtime is not None
        limit = runtime.spec.limits.max_request_bytes
        try:
            body = await _read_body(receive, limit)
        except _TooLarge:
            return self._too_large(None, limit, begun.request_id, begun.function)
        except _Disconnected:
            return CLIENT_CLOSED, [], b""
        request = self._request(scope, begun, body)
        for attempt in (1, 2):
            try:
                return _finish_response(await runtime.invoke(request, preempted=preempted))
            except InvocationError as error:
                # Only a guest that never started, and only an idempotent method: a
                # started guest is never re-run, whatever it did (see errors.py).
                if attempt == 1 and self._retriable(error, begun):
                    log.warning("retrying %s after %s before the guest started: %s",
                                begun.function, error.reason, error.detail,
                                extra={"function": begun.function,
                                       "request_id": begun.request_id,
                                       "reason": error.reason})
                    preempted = None
                    continue
                return self._failed(error, begun)
        raise AssertionError("unreachable: the loop returns")

    @staticmethod
    def _request(scope: Scope, begun: Begun, body: bytes) -> HttpRequest:
        """The request the guest sees: hop-by-hop, auth and credential headers removed."""
        admitted, tokens = begun.admitted, begun.connection_tokens
        headers = [
            (n, v) for n, v in scope["headers"]
            if n not in HOP_BY_HOP and n not in tokens and n != b"x-request-id"
            and not n.startswith(AUTH_PREFIX) and n not in admitted.strip
        ]
        headers.extend(admitted.identity)
        headers.append((b"x-request-id", begun.request_id.encode()))
        client = scope.get("client") or ("", 0)
        server = scope.get("server") or ("", 0)
        rule = begun.rule
        assert rule is not None
        # Guests see HEAD as GET; the body is dropped on the way out.
        return HttpRequest(
            method="GET" if begun.method == "HEAD" else begun.method,
            path=begun.path, raw_path=scope.get("raw_path") or begun.path.encode(),
            query=scope["query_string"] if admitted.query is None else admitted.query,
            headers=headers, body=body,
            host=begun.host or str(server[0]), scheme=scope.get("scheme", "http"),
            client=str(client[0]), server_port=int(server[1] or 0),
            route_path=rule.path, params=begun.params, request_id=begun.request_id,
        )

    @staticmethod
    def _retriable(error: InvocationError, begun: Begun) -> bool:
        return not error.guest_started and begun.method in IDEMPOTENT \
            and error.reason in RETRIED

    def _failed(self, error: InvocationError, begun: Begun) -> Problem:
        self.metrics.invocation_errors.labels(begun.function, error.reason).inc()
        log.warning("invocation failed: %s", error.detail,
                    extra={"function": begun.function, "request_id": begun.request_id,
                           "reason": error.reason})
        return from_invocation_error(error, begun.request_id, begun.function)

    @staticmethod
    def _internal_error(begun: Begun) -> Problem:
        log.exception("internal error", extra={"request_id": begun.request_id})
        begun.function = ""
        return problem(500, "internal", "Internal error", "the runner failed; see its log",
                       begun.request_id)

    # -- counting and logging ---------------------------------------------------------

    def _record(self, begun: Begun, response: Problem) -> None:
        """Count the answered request and queue its access line."""
        status, _, body = response
        elapsed = time.perf_counter() - begun.started
        self._counts.request(begun.function, status, elapsed)
        if self.access_log.enabled:
            rule = begun.rule
            self.access_log.request(
                begun.method, begun.path, status, begun.request_id, begun.function,
                rule.ident if rule is not None else "", elapsed,
                "ok" if status < 400 else _problem_slug(body),
            )

    def _authorize(self, scope: Scope, rule: CompiledRule, request_id: str) -> Allowed | Problem:
        """The rule's auth decision (http/auth.py), counted; a Problem answers a refusal."""
        policy = self._auth.policy(rule.route, rule.index) if self._protected else None
        if policy is None:
            return OPEN
        decision = policy.decide(scope["headers"], scope["query_string"], time.time())
        if isinstance(decision, Allowed):
            self._count_auth(rule.route, "allowed")
            return decision
        self._count_auth(rule.route, "forbidden" if decision.status == 403 else "unauthenticated")
        return problem(decision.status, decision.slug, decision.title, decision.detail,
                       request_id, headers=decision.headers)

    def _count_auth(self, route: str, result: str) -> None:
        counter = self._auth_counters.get((route, result))
        if counter is None:
            counter = self.metrics.auth_decisions.labels(route, result)
            self._auth_counters[(route, result)] = counter
        counter.inc()

    @staticmethod
    def _too_large(size: int | None, limit: int, request_id: str, function: str) -> Problem:
        got = f"{size} bytes" if size and size > 0 else "the body"
        return problem(413, "body-too-large", "Request body too large",
                       f"{got} is over maxRequestBytes ({limit})", request_id, function=function)


def _unavailable(function: str, known: bool, request_id: str) -> Problem:
    """A matched rule whose function is not served.

    Known (defined but not loaded: it failed to load, or its module has not
    arrived yet): 503 with ``Retry-After``.  Unknown (no such function: a
    standalone folder does not define it, or the operator said it does not
    exist): 500 with no ``Retry-After``, as retrying cannot help.  Why a
    function failed to load (compiler messages, file names) is for its status,
    the runner log and the admin plane, never for clients.
    """
    if known:
        return problem(503, "not-loaded", "Function unavailable",
                       f"function {function} is not loaded; its status says why", request_id,
                       function=function, headers=[(b"retry-after", b"5")])
    return problem(500, "function-not-found", "Function not found",
                   f"the route names function {function}, which does not exist", request_id,
                   function=function)


def _finish_response(result: tuple[int, list[tuple[bytes, bytes]], bytes]) -> Problem:
    """Complete a guest's response (already checked by its executor, see abi.base)."""
    status, guest_headers, body = result
    headers = []
    typed = False
    for header in guest_headers:
        name = header[0]
        if name not in HOP_BY_HOP and name != b"x-request-id":
            typed = typed or name == b"content-type"
            headers.append(header)
    if status in NO_BODY:
        body = b""
    elif not typed:
        headers.append((b"content-type", content_type.detect(body)))
    return status, headers, body


def _framed(response: Problem, request_id: str) -> Problem:
    """``response`` with the headers every answer ends with: ``x-request-id`` and,
    unless the status has no body, ``content-length`` (both ways out use it)."""
    status, headers, body = response
    headers.append((b"x-request-id", request_id.encode()))
    if status not in NO_BODY:
        headers.append((b"content-length", str(len(body)).encode()))
    return response


async def _send(send: Send, method: str, request_id: str, response: Problem) -> None:
    status, headers, body = _framed(response, request_id)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; raises _TooLarge past ``limit``, _Disconnected if the client left.

    How long a client may take is bounded by the HTTP protocol
    (:mod:`edge_runner.http.guard`: ``body_timeout``), which then disconnects.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _TooLarge
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
