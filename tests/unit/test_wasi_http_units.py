"""In-process tests of the ``wasi-http`` executor, its host resources and the
component-model fast path of wasm/capi.py, on the real wasmtime engine.

The component is tests/components/echo/echo.wat (tests/support/components.py).
The capi fast path is compared with wasmtime-py's public conversions: a value
lowered by one and lifted by the other must come back unchanged.
"""

from __future__ import annotations

import ctypes
import os
import typing

import pytest
import wasmtime
import wasmtime.component as wc

from edge_api.abi import ModuleRejected, is_component, validate
from edge_runner.abi import EXECUTORS
from edge_runner.abi import wasihttp_host as host
from edge_runner.abi.wasihttp import run_wasi_http
from edge_runner.errors import GuestFailure, GuestTimeout
from edge_runner.wasm import capi
from edge_runner.wasm.engine import CompiledModule, WasmEngine
from edge_runner.wasm.guest_output import GuestOutput
from support import components
from support.guests import constant_wat
from support.inprocess import function_spec, http_request, wasm_of


@pytest.fixture(scope="module")
def echo(engine: WasmEngine) -> CompiledModule:
    return engine.compile(components.echo_component(), "wasi-http")


def _run(engine: WasmEngine, echo: CompiledModule, path: str, **spec: typing.Any
         ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    body = spec.pop("body", b"")
    headers = spec.pop("headers", ())
    return run_wasi_http(
        engine=engine, compiled=echo, name="echo", spec=function_spec(abi="wasi-http", **spec),
        request=http_request(path, method="POST" if body else "GET", body=body,
                             headers=headers), request_id="r1")


def test_executor_is_registered_and_fresh_per_request() -> None:
    executor = EXECUTORS["wasi-http"]
    assert (executor.abi, executor.reusable, executor.inline) == ("wasi-http", False, False)


def test_echo_component_answers(engine: WasmEngine, echo: CompiledModule) -> None:
    body = os.urandom(300_000)
    status, headers, answer = _run(engine, echo, "/echo/x", body=body,
                                   headers=[(b"x-probe", b"v")])
    assert status == 200
    assert dict(headers) == {b"x-path": b"/echo/x", b"x-probe": b"v"}
    assert answer == body


def test_errors_map_to_the_http_contract(engine: WasmEngine, echo: CompiledModule) -> None:
    with pytest.raises(GuestFailure) as silent:
        _run(engine, echo, "/none")
    assert silent.value.reason == "bad_response"
    with pytest.raises(GuestTimeout) as slow:
        _run(engine, echo, "/loop", limits={"timeout": "50ms"})
    assert slow.value.reason == "timeout"
    with pytest.raises(GuestTimeout) as fuel:
        _run(engine, echo, "/loop", limits={"fuel": 100_000})
    assert fuel.value.reason == "fuel"
    with pytest.raises(GuestFailure) as hog:
        _run(engine, echo, "/grow", limits={"memory": "2Mi"})
    assert hog.value.status == 502
    with pytest.raises(GuestFailure) as big:
        _run(engine, echo, "/echo", body=b"x" * 5000, limits={"maxResponseBytes": 4096})
    assert big.value.reason == "response_too_large"


def test_component_checks() -> None:
    component = components.echo_component()
    core = wasm_of(constant_wat(b"x"))
    assert is_component(component) and not is_component(core)
    assert validate(component, "wasi-http").startswith("sha256:")
    cases = {
        (core, "wasi-http"): "NotAComponent",
        (component, "edge"): "WrongAbi",
        (wasm_of("(component)"), "wasi-http"): "MissingExport",
        (wasm_of('(component (import "my:secret/api" (instance)))'), "wasi-http"):
            "ImportNotAllowed",
    }
    for (wasm, abi), reason in cases.items():
        with pytest.raises(ModuleRejected) as refused:
            validate(wasm, abi)
        assert refused.value.reason == reason, (abi, refused.value)


def test_disk_cache_artifact_round_trip(engine: WasmEngine, echo: CompiledModule) -> None:
    loaded = engine.load_artifact(echo.serialize(), digest=echo.digest, size=echo.size,
                                  abi="wasi-http")
    assert _run(engine, loaded, "/echo", body=b"again")[2] == b"again"


# ---- host resources ---------------------------------------------------------------------


def _state() -> host.RequestState:
    return host.RequestState(http_request("/"), env=[], max_response=10, log=GuestOutput("f"))


def test_fields_validate_names_values_and_immutability() -> None:
    host.bind(_state())
    try:
        assert host.fields_from_list(None, [("bad name", b"v")]) == wc.Variant("invalid-syntax")
        assert host.fields_from_list(None, [("ok", b"a\nb")]) == wc.Variant("invalid-syntax")
        fields = host.Fields([("a", b"1")])
        frozen = host.Fields([("a", b"1")], immutable=True)
        assert host.set_entries(fields, "A", [b"2", b"3"]) is None
        assert fields.entries == [("a", b"2"), ("a", b"3")]
        assert host.set_entries(frozen, "a", [b"2"]) == wc.Variant("immutable")
        assert host.append_entry(fields, "b", b"x") is None
        assert host.append_entry(fields, "b(", b"x") == wc.Variant("invalid-syntax")
        assert host.append_entry(frozen, "b", b"x") == wc.Variant("immutable")
    finally:
        host.bind(None)


def test_response_body_is_bounded() -> None:
    state = _state()
    body = host.ResponseBody(limit=10)
    host.write_chunk(state, host.OutputStream(body=body), b"12345")
    with pytest.raises(host.GuestAbort):
        host.write_chunk(state, host.OutputStream(body=body), b"123456")
    assert state.failure is not None and state.failure.reason == "response_too_large"


# ---- capi fast path vs wasmtime-py's public conversions ------------------------------------


def _import_types(engine: WasmEngine) -> dict[str, typing.Any]:
    component = wc.Component(engine.engine, components.echo_component())
    imports = component.type.imports(engine.engine)
    found: dict[str, typing.Any] = {}
    for name in ("wasi:io/streams@0.2.0", "wasi:http/types@0.2.0"):
        instance = imports[name].ty
        assert isinstance(instance, wc.ComponentInstanceType)
        for export, item in instance.exports(engine.engine).items():
            if isinstance(item.ty, wc.FuncType):
                found[export] = item.ty
    return found


def _round_trip(lower: typing.Any, lift: typing.Any, value: object) -> object:
    store = wasmtime.Store(wasmtime.Engine())
    raw = capi.ComponentVal()
    lower.convert_to_c(store, value, ctypes.pointer(raw))
    return lift.convert_from_c(raw)


@pytest.mark.parametrize(("function", "value"), [
    ("[method]input-stream.blocking-read", os.urandom(70_000)),
    ("[method]input-stream.blocking-read", b""),
    ("[method]input-stream.blocking-read", None),  # stream-error.closed
    ("[method]fields.get", [b"a", b"", os.urandom(3)]),
    ("[method]output-stream.blocking-write-and-flush", wc.Variant("ok")),
])
def test_primed_types_convert_like_the_public_api(
    engine: WasmEngine, function: str, value: object
) -> None:
    stock = _import_types(engine)[function].result
    primed = capi.prime(_import_types(engine)[function].result)
    assert _round_trip(primed, stock, value) == value
    assert _round_trip(stock, primed, value) == value
