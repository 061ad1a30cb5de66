"""Executor of the ``wasi-http`` ABI: standard ``wasi:http/incoming-handler`` components.

The same ``.wasm`` that ``wasmtime serve`` or Spin runs (docs/abi.md).  A fresh
instance per request, on a worker thread: the request becomes an
``incoming-request`` (method, path with query, scheme, authority, headers,
body as an ``input-stream``), ``handle`` runs, and the answer is what the guest
put in its ``response-outparam`` (status, headers, the body written to the
``outgoing-body``); trailers are ignored.  The host resources live in
:mod:`edge_runner.abi.wasihttp_host`, the rest of the proxy world and the
sandbox in :mod:`edge_runner.abi.wasihttp_world`.

Failures (docs/http.md): a guest that returns without setting the response,
or sets an error code, is ``bad_response`` (502); time and fuel limits are 504;
a body over ``maxResponseBytes`` is ``response_too_large``; traps as in
:mod:`edge_runner.wasm.traps`.  A component cannot be instrumented with the
grow probe, so running into the memory limit shows as the trap the guest ends
in (502), not as ``memory``.
"""

from __future__ import annotations

import logging
import threading
import time
import typing
import weakref

import wasmtime
from wasmtime.component import Component, Linker

from edge_api.models import EdgeFunctionSpec
from edge_runner.abi import wasihttp_host as host
from edge_runner.abi.base import HttpRequest, Response, check_response
from edge_runner.abi.fresh import FreshExecutor
from edge_runner.abi.wasihttp_world import build_linker
from edge_runner.errors import GuestFailure, GuestTimeout
from edge_runner.wasm import capi
from edge_runner.wasm.engine import MAX_TABLE_ELEMENTS, UNLIMITED_FUEL, CompiledModule, WasmEngine
from edge_runner.wasm.guest_output import GuestOutput
from edge_runner.wasm.traps import BACKTRACE_LIMIT, DETAIL_LIMIT, classify

log = logging.getLogger("edge_runner.guest")

#: The export every wasi-http component has, and its function.
HANDLER = "wasi:http/incoming-handler@0.2.0"
#: Core instances, tables and memories a component may create (componentize-py
#: components have a few dozen core instances; the memory cap is per memory).
MAX_INSTANCES, MAX_TABLES, MAX_MEMORIES = 200, 200, 20

class Prepared:
    """What a component needs per request, made once: its linker, its handler's types."""

    def __init__(self, linker: Linker) -> None:
        self.linker = linker
        self.params: list[typing.Any] | None = None


_prepared: weakref.WeakKeyDictionary[Component, Prepared] = weakref.WeakKeyDictionary()
_prepared_lock = threading.Lock()


def prepared(engine: WasmEngine, component: Component) -> Prepared:
    """The linker and handler types of ``component`` (made once per compiled component)."""
    with _prepared_lock:
        found = _prepared.get(component)
        if found is None:
            try:
                found = Prepared(build_linker(engine.engine, component))
            except wasmtime.WasmtimeError as exc:
                raise GuestFailure(
                    "instantiate", f"imports cannot be satisfied: {str(exc)[:DETAIL_LIMIT]}",
                    guest_started=False,
                ) from exc
            _prepared[component] = found
        return found


def _handler_index(component: Component, instance: typing.Any, store: wasmtime.Store) -> typing.Any:
    outer = instance.get_export_index(store, HANDLER)
    if outer is None:  # a 0.2.x minor version: find it by prefix
        for name in component.type.exports(store.engine):
            if name.startswith("wasi:http/incoming-handler@0.2."):
                outer = instance.get_export_index(store, name)
                break
    if outer is None:
        raise GuestFailure("instantiate", f"component does not export {HANDLER}",
                           guest_started=False)
    return instance.get_func(store, instance.get_export_index(store, "handle", outer))


def _response(state: host.RequestState) -> Response:
    if state.failure is not None:
        raise state.failure
    response = state.response
    if response is None:
        if state.error_code is not None:
            raise GuestFailure(
                "bad_response", f"the function answered with error {state.error_code}")
        raise GuestFailure("bad_response", "the function returned without setting a response")
    body = response.body
    headers: list[tuple[bytes, bytes]] = [
        (name.encode("latin-1"), value) for name, value in response.headers.entries
    ]
    content = b"".join(body.chunks) if body is not None else b""
    return check_response((response.status, headers, content))


def run_wasi_http(
    *, engine: WasmEngine, compiled: CompiledModule, name: str, spec: EdgeFunctionSpec,
    request: HttpRequest, request_id: str,
) -> Response:
    """Instantiate the component, run ``handle`` once and collect its response."""
    component = compiled.component
    assert component is not None, "wasi-http functions are compiled as components"
    limits = spec.limits
    ready = prepared(engine, component)
    log_output = GuestOutput(name)
    log_output.request_id = request_id
    state = host.RequestState(
        request, env=[(e.name, e.value) for e in spec.env],
        max_response=limits.max_response_bytes, log=log_output,
    )
    store = wasmtime.Store(engine.engine)
    store.set_limits(
        memory_size=limits.memory, table_elements=MAX_TABLE_ELEMENTS, instances=MAX_INSTANCES,
        tables=MAX_TABLES, memories=MAX_MEMORIES,
    )
    deadline = engine.limit_time(store, limits.timeout)
    store.set_fuel(limits.fuel or UNLIMITED_FUEL)
    host.bind(state)
    try:
        try:
            instance = ready.linker.instantiate(store, component)
            handle = _handler_index(component, instance, store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise _failure(exc, state, store, name=name, request_id=request_id,
                           memory=limits.memory, deadline=deadline, instantiating=True) from exc
        request_handle = state.new(object(), host.INCOMING_REQUEST)
        outparam = state.new(object(), host.RESPONSE_OUTPARAM)
        if ready.params is None:
            ready.params = capi.component_func_params(handle, store)
        try:
            capi.call_component_func(handle, store, ready.params, (request_handle, outparam))
        except Exception as exc:  # also a host function failing on a bad value
            raise _failure(exc, state, store, name=name, request_id=request_id,
                           memory=limits.memory, deadline=deadline) from exc
        return _response(state)
    finally:
        host.bind(None)
        log_output.flush()
        store.close()


def _failure(
    exc: Exception, state: host.RequestState, store: wasmtime.Store, *, name: str,
    request_id: str, memory: int, deadline: float, instantiating: bool = False,
) -> Exception:
    """Classify a failed instantiation or call.

    A component call reports traps as a plain ``WasmtimeError`` (no trap code), so
    the limits are judged from facts, not from its text: no fuel left is ``fuel``,
    a call that ended past its deadline was stopped by the epoch (``timeout``).
    """
    if state.failure is not None:  # a host function stopped the guest on purpose
        return state.failure
    if not isinstance(exc, wasmtime.WasmtimeError):
        # A host function failed on what the guest passed it (GuestAbort, or a value
        # wasmtime-py could not convert); the guest was stopped there.
        log.warning("wasi-http host call failed: %r", exc,
                    extra={"function": name, "request_id": request_id})
        return GuestFailure("trap", "the function failed")
    if not isinstance(exc, wasmtime.Trap):
        if store.get_fuel() == 0:
            return GuestTimeout("fuel", "the function used up its fuel budget")
        if time.monotonic() >= deadline:
            return GuestTimeout("timeout", "the function ran past its time limit")
        if instantiating and "wasm trap" not in str(exc):
            log.warning("instantiation failed: %s", str(exc)[:BACKTRACE_LIMIT],
                        extra={"function": name, "request_id": request_id})
            return GuestFailure("instantiate", f"instantiation failed: {str(exc)[:DETAIL_LIMIT]}",
                                guest_started=False)
    return classify(exc, function=name, request_id=request_id, memory_refused=False,
                    memory_limit=memory)


#: The ``wasi-http`` ABI: a fresh instance per request, always on a worker thread.
WASI_HTTP = FreshExecutor("wasi-http", run_wasi_http)
