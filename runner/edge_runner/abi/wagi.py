"""Executor of the ``wagi`` ABI: CGI over WASI, a fresh instance per request.

The request becomes CGI/WAGI environment variables plus the function's own
``env``; the body is stdin; ``_start`` runs; stdout carries CGI headers
(``Content-Type``, ``Status``, ``Location``), a blank line, then the body.
The pool (:mod:`edge_runner.invoke.pool`) runs :func:`run_wagi` on a worker thread, through
the shared fresh-instance executor (:mod:`edge_runner.abi.fresh`).  Failures:
a non-zero ``proc_exit`` is ``exit`` (502), stdout over ``maxResponseBytes`` is
``response_too_large`` (502), the rest as in :mod:`edge_runner.wasm.traps`.  Guest
stderr goes to the log, bounded, like the edge ABI's output.
"""

from __future__ import annotations

import wasmtime

from edge_api.models import EdgeFunctionSpec
from edge_runner.abi.base import HttpRequest, Response, check_response, make_wasi
from edge_runner.abi.fresh import FreshExecutor
from edge_runner.errors import GuestFailure
from edge_runner.wasm import capi
from edge_runner.wasm.engine import UNLIMITED_FUEL, CompiledModule, WasmEngine
from edge_runner.wasm.guest_output import GuestOutput
from edge_runner.wasm.traps import classify, instantiation_failure, memory_failure
from edge_runner.wasm.wasi_output import Streams


def cgi_environment(request: HttpRequest) -> list[tuple[str, str]]:
    """CGI/WAGI variables for one request (RFC 3875 plus WAGI's X_* extras)."""
    query = request.query.decode("latin-1")
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "edge-runner",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": request.host,
        "SERVER_PORT": str(request.server_port),
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": request.route_path.rstrip("/"),
        "PATH_INFO": request.path,
        "PATH_TRANSLATED": request.path,
        "QUERY_STRING": query,
        "REMOTE_ADDR": request.client,
        "REMOTE_HOST": request.client,
        "CONTENT_LENGTH": str(len(request.body)),
        "CONTENT_TYPE": "",
        "X_FULL_URL": f"{request.scheme}://{request.host}{request.path}"
        + (f"?{query}" if query else ""),
        "X_MATCHED_ROUTE": request.route_path,
        "X_RAW_PATH_INFO": request.path,
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key == "CONTENT_TYPE":
            env["CONTENT_TYPE"] = text
        elif key in ("CONTENT_LENGTH", "PROXY_AUTHORIZATION"):
            continue
        else:
            env[f"HTTP_{key}"] = text
    for param, captured in request.params:
        env[f"X_PARAM_{param.upper()}"] = captured
    return list(env.items())


def parse_cgi_output(output: bytes) -> Response:
    """Split CGI stdout into status, headers and body; raises GuestFailure if malformed."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = output.partition(separator)
        if found:
            break
    else:
        raise GuestFailure("bad_response", "CGI output has no blank line after the headers")
    status = 200
    headers: list[tuple[bytes, bytes]] = []
    for raw in head.splitlines():
        name, colon, value = raw.partition(b":")
        if not colon or not name.strip():
            raise GuestFailure("bad_response", f"malformed CGI header line {raw[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        if key == b"status":
            code = value.split(b" ", 1)[0]
            if not code.isdigit() or not 100 <= int(code) <= 599:
                raise GuestFailure("bad_response", f"bad CGI Status {value[:40]!r}")
            status = int(code)
        else:
            headers.append((key, value))
            if key == b"location" and status == 200:
                status = 302
    return status, headers, body


class _BoundedStdout:
    """Collects stdout up to the response limit; remembers that it overflowed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.overflow = False

    def room(self) -> int:
        return max(0, self.limit - self.size)

    def write(self, kept: bytes, size: int) -> None:
        self.size += size
        if self.size > self.limit:
            self.overflow = True
        else:
            self.chunks.append(kept)


def run_wagi(
    *,
    engine: WasmEngine,
    compiled: CompiledModule,
    name: str,
    spec: EdgeFunctionSpec,
    request: HttpRequest,
    request_id: str,
) -> Response:
    """Instantiate, run ``_start`` once and parse its CGI output."""
    limits = spec.limits
    log_output = GuestOutput(name)
    log_output.request_id = request_id
    stdout = _BoundedStdout(limits.max_response_bytes)
    wasi = make_wasi(spec, name)
    wasi.env = cgi_environment(request) + [(e.name, e.value) for e in spec.env]
    capi.set_stdin_bytes(wasi, request.body)
    store = engine.new_store(memory=limits.memory, wasi=wasi, output=Streams(stdout, log_output))
    engine.limit_time(store, limits.timeout)
    store.set_fuel(limits.fuel or UNLIMITED_FUEL)
    probe: wasmtime.Global | None = None

    def refused() -> bool:
        return probe is not None and bool(probe.value(store))

    try:
        try:
            instance = compiled.pre.instantiate(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise instantiation_failure(
                exc, module=compiled.module, function=name, request_id=request_id,
                memory_refused=False, memory_limit=limits.memory,
            ) from exc
        exports = instance.exports(store)
        start = exports["_start"]
        assert isinstance(start, wasmtime.Func)
        if compiled.grow_probe is not None:
            found = exports[compiled.grow_probe]
            assert isinstance(found, wasmtime.Global)
            probe = found
        try:
            start(store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if not (isinstance(exc, wasmtime.ExitTrap) and exc.code == 0):
                raise classify(
                    exc, function=name, request_id=request_id, memory_refused=refused(),
                    memory_limit=limits.memory,
                ) from exc
        if refused():
            raise memory_failure(limits.memory)
    finally:
        log_output.flush()
        store.close()  # free the instance's memory now, not when the GC finds the cycle
    if stdout.overflow:
        raise GuestFailure(
            "response_too_large",
            f"output of {stdout.size} bytes is over maxResponseBytes ({stdout.limit})",
        )
    return check_response(parse_cgi_output(b"".join(stdout.chunks)))


#: The ``wagi`` ABI: a fresh instance per request, always on a worker thread.
WAGI = FreshExecutor("wagi", run_wagi)
