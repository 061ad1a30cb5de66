"""Executor of the ``edge`` ABI: one hot instance, one call per request.

An :class:`EdgeInstance` owns a store (one per instance, used by one thread at
a time), its memory and the two exports, reached through :class:`RawCall`.
The pool (:mod:`edge_runner.pool`) creates, reuses and discards instances; the
data plane hands it an encoded request and gets ``(status, headers, body)``.
"""

from __future__ import annotations

import ctypes

import wasmtime

from edge_api.models import EdgeFunctionSpec
from edge_runner.engine import UNLIMITED_FUEL, CompiledModule, WasmEngine
from edge_runner.envelope import EnvelopeError, decode_response
from edge_runner.errors import GuestFailure, InvocationError
from edge_runner.fastcall import RawCall, StoreHandle
from edge_runner.guest_output import GuestOutput
from edge_runner.traps import WASM_PAGE, classify

Response = tuple[int, list[tuple[bytes, bytes]], bytes]


def make_wasi(spec: EdgeFunctionSpec, output: GuestOutput, argv0: str) -> wasmtime.WasiConfig:
    """WASI with only the function's env, no preopens, output into ``output``."""
    wasi = wasmtime.WasiConfig()
    wasi.argv = [argv0]
    wasi.env = [(e.name, e.value) for e in spec.env]
    wasi.stdout_custom = output.write
    wasi.stderr_custom = output.write
    return wasi


class BudgetExceeded(Exception):
    """A speculative call ran out of its small fuel budget; rerun it elsewhere."""


class EdgeInstance:
    """A live instance of an edge-ABI module; discard it after any failure."""

    __slots__ = (
        "_alloc",
        "_fuel",
        "_handle",
        "_handle_store",
        "_max_response",
        "_memory_limit",
        "_ticks",
        "memory",
        "name",
        "output",
        "served",
        "store",
    )

    def __init__(
        self, engine: WasmEngine, compiled: CompiledModule, name: str, spec: EdgeFunctionSpec
    ) -> None:
        limits = spec.limits
        self.name = name
        self.output = GuestOutput(name)
        self.served = 0
        self._ticks = engine.deadline_ticks(limits.timeout)
        self._fuel = limits.fuel or UNLIMITED_FUEL
        self._memory_limit = limits.memory
        self._max_response = limits.max_response_bytes
        self.store = engine.new_store(memory=limits.memory, wasi=make_wasi(spec, self.output, name))
        self.store.set_epoch_deadline(self._ticks)
        try:
            instance = compiled.pre.instantiate(self.store)
            exports = instance.exports(self.store)
            memory = exports["memory"]
            alloc = exports["edge_alloc"]
            handle = exports["edge_handle"]
            assert isinstance(memory, wasmtime.Memory)
            assert isinstance(alloc, wasmtime.Func) and isinstance(handle, wasmtime.Func)
            if compiled.has_initialize:
                init = exports["_initialize"]
                assert isinstance(init, wasmtime.Func)
                self.store.set_fuel(self._fuel)
                RawCall(self.store, init, 1).void()
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            error = classify(
                exc, function=name, request_id="", memory_bytes=0, memory_limit=limits.memory
            )
            raise GuestFailure(
                "instantiate", f"instantiation failed: {error.detail}", guest_started=False
            ) from exc
        finally:
            self.output.flush()
        self.memory = memory
        self._handle_store = StoreHandle(self.store, memory)
        self._alloc = RawCall(self.store, alloc, 1)
        self._handle = RawCall(self.store, handle, 2)

    def memory_bytes(self) -> int:
        """Linear memory this instance holds now."""
        return self._handle_store.memory()[1]

    def invoke(self, envelope: bytes, request_id: str, *, budget: int = 0) -> Response:
        """Run one request; raises :class:`InvocationError` (then discard the instance).

        ``budget`` > 0 caps the fuel of this call below the function's own limit
        (speculative inline execution, see :mod:`edge_runner.pool`); running out
        of it raises :class:`BudgetExceeded` instead of a fuel error.
        """
        handle = self._handle_store
        self.output.request_id = request_id
        speculative = 0 < budget < self._fuel
        handle.prepare(self._ticks, budget if speculative else self._fuel)
        self.served += 1
        try:
            size = len(envelope)
            ptr = self._alloc.i32_to_i32(size) & 0xFFFFFFFF
            base, length = handle.memory()
            if ptr == 0 or ptr + size > length:
                reason = "memory" if length + WASM_PAGE > self._memory_limit else "bad_response"
                raise GuestFailure(reason, f"edge_alloc({size}) returned {ptr:#x}")
            ctypes.memmove(base + ptr, envelope, size)
            packed = self._handle.i32_i32_to_i64(ptr, size) & 0xFFFFFFFFFFFFFFFF
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            if speculative and getattr(exc, "trap_code", None) == wasmtime.TrapCode.OUT_OF_FUEL:
                raise BudgetExceeded from exc
            raise classify(
                exc,
                function=self.name,
                request_id=request_id,
                memory_bytes=self.memory_bytes(),
                memory_limit=self._memory_limit,
            ) from exc
        finally:
            self.output.flush()
        return self._read_response(packed >> 32, packed & 0xFFFFFFFF)

    def _read_response(self, ptr: int, size: int) -> Response:
        if size > self._max_response:
            raise GuestFailure(
                "response_too_large",
                f"response of {size} bytes is over maxResponseBytes ({self._max_response})",
            )
        base, length = self._handle_store.memory()
        if ptr + size > length:
            raise GuestFailure(
                "bad_response", f"response envelope {ptr:#x}+{size} is outside guest memory"
            )
        try:
            return decode_response(ctypes.string_at(base + ptr, size))
        except EnvelopeError as exc:
            raise GuestFailure("bad_response", str(exc)) from exc


__all__ = ["EdgeInstance", "InvocationError", "Response", "make_wasi"]
