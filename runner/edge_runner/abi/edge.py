"""Executor of the ``edge`` ABI: one hot instance, one call per request.

:class:`EdgeExecutor` encodes a request into the envelope of docs/abi.md
(:mod:`edge_runner.abi.envelope`).  An :class:`EdgeInstance` owns a store (one
per instance, used by one thread at a time), its memory and the two exports,
reached through :class:`~edge_runner.wasm.fastcall.RawCall`.  The pool
(:mod:`edge_runner.invoke.pool`) creates, reuses and discards instances, and
may run a call speculatively on the event loop under a small budget.

With ``pool.reuse: false`` every request needs an instance as new.  For modules
the load-time rewrite found renewable (:mod:`edge_runner.wasm.growprobe`), the
instance keeps a :class:`~edge_runner.wasm.renewal.Renewal` and the pool renews it
after each successful request (:meth:`EdgeInstance.renew`; its ``_initialize``
runs again at the start of the next request).  Other modules get a new instance
per request, so creation is on the hot path: the store, its WASI context and the
exports are reached through :mod:`edge_runner.wasm.capi`'s raw handles (no
wasmtime-py objects), with the WASI argv/env built once per function
(:func:`~edge_runner.abi.base.wasi_recipe`).  Either way nothing is shared between
requests but the compiled code: each instance starts from its module's state at
instantiation and runs its own initialization (restoring a snapshot of an
*initialized* instance instead, as Wizer does, would hand every request what one
initialization read from the clock or the random source).
"""

from __future__ import annotations

import ctypes
import time
import typing

import wasmtime

from edge_api.models import EdgeFunctionSpec
from edge_runner.abi.base import (
    MAX_RESPONSE_HEADERS,
    BudgetExceeded,
    HttpRequest,
    Response,
    Speculation,
    check_response,
    wasi_recipe,
)
from edge_runner.abi.envelope import EnvelopeError, decode_response, encode_request
from edge_runner.errors import GuestFailure
from edge_runner.wasm import capi
from edge_runner.wasm.deadline import Deadline, is_time_limit
from edge_runner.wasm.engine import UNLIMITED_FUEL, CompiledModule, WasmEngine
from edge_runner.wasm.fastcall import GlobalReader, RawCall, StoreHandle
from edge_runner.wasm.guest_output import GuestOutput
from edge_runner.wasm.renewal import SUPPORTED as RENEWAL_SUPPORTED
from edge_runner.wasm.renewal import Renewal
from edge_runner.wasm.traps import classify, instantiation_failure, memory_failure
from edge_runner.wasm.wasi_output import Streams


def _preempted(
    exc: Exception, speculation: Speculation | None, fuel: int, ticks: int
) -> BudgetExceeded | None:
    """The BudgetExceeded to raise if a speculative budget (not the function's own
    limit) stopped this call, else None."""
    if speculation is None:
        return None
    code = getattr(exc, "trap_code", None)
    if code == wasmtime.TrapCode.OUT_OF_FUEL and speculation.fuel < fuel:
        return BudgetExceeded(by_time=False)
    if is_time_limit(exc) and speculation.ticks < ticks:
        return BudgetExceeded(by_time=True)
    return None


class EdgeInstance:
    """A live instance of an edge-ABI module; discard it after any failure.

    Created with a :class:`Speculation` (on the event loop), its start code runs
    under that budget too and raises :class:`BudgetExceeded` when it needs more.
    """

    __slots__ = (
        "_alloc",
        "_deadline",
        "_engine",
        "_fuel",
        "_handle",
        "_handle_store",
        "_initialize",
        "_max_response",
        "_memory_base",
        "_memory_limit",
        "_memory_size",
        "_probe",
        "_reinitialize",
        "_renewal",
        "_ticks",
        "_timeout",
        "idle_since",
        "name",
        "output",
        "reserved",
        "served",
        "store",
    )

    def __init__(
        self, engine: WasmEngine, compiled: CompiledModule, name: str, spec: EdgeFunctionSpec,
        *, speculation: Speculation | None = None, request_id: str = "", renew: bool = False,
    ) -> None:
        limits = spec.limits
        self.name = name
        self.output = GuestOutput(name)
        self.output.request_id = request_id
        self.served = 0
        #: Bytes of the memory budget this instance holds (managed by the pool).
        self.reserved = 0
        self.idle_since = 0.0
        self._engine = engine
        self._timeout = limits.timeout
        self._ticks = engine.deadline_ticks(limits.timeout)
        self._fuel = limits.fuel or UNLIMITED_FUEL
        self._memory_limit = limits.memory
        self._max_response = limits.max_response_bytes
        self._probe: GlobalReader | None = None
        self._initialize: RawCall | None = None
        self._renewal: Renewal | None = None
        self._reinitialize = False
        fuel, ticks, seconds = self._fuel, self._ticks, self._timeout
        if speculation is not None:
            fuel, ticks = min(fuel, speculation.fuel), min(ticks, speculation.ticks)
            seconds = min(seconds, speculation.seconds)
        self._deadline = Deadline()
        wasi = wasi_recipe(spec, name)
        self.store = engine.new_raw_store(
            memory=limits.memory, wasi=wasi,
            output=Streams(self.output, self.output), deadline=self._deadline,
        )
        context = self.store.context
        self._handle_store = StoreHandle(context)
        self._handle_store.prepare(ticks, fuel)
        self._deadline.set(time.monotonic() + seconds)
        #: Linear memory size and address last read (-1: not yet); see :meth:`_memory`.
        self._memory_size = -1
        self._memory_base = 0
        try:
            self._start(compiled, context, wasi=wasi if renew else None)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            preempted = _preempted(exc, speculation, self._fuel, self._ticks)
            if preempted is not None:
                self.output.discard()
                self.close()
                raise preempted from exc
            error = instantiation_failure(
                exc, module=compiled.module, function=name, request_id=request_id,
                memory_refused=self._refused(), memory_limit=limits.memory,
            )
            self.close()
            raise error from exc
        finally:
            self.output.flush()

    def _start(self, compiled: CompiledModule, context: object,
               wasi: capi.WasiRecipe | None) -> None:
        """Instantiate, find the exports (and the grow probe), keep what a renewal needs
        (given ``wasi``: the pool will renew it), run ``_initialize``.

        The exports' kinds and signatures were checked at load
        (:func:`edge_api.abi.check_module`); the asserts guard that invariant.
        """
        instance = capi.instantiate(compiled.pre, context)
        memory = capi.raw_export(context, instance, b"memory")
        alloc = capi.raw_export(context, instance, b"edge_alloc")
        handle = capi.raw_export(context, instance, b"edge_handle")
        assert memory is not None and memory.kind == capi.EXTERN_MEMORY
        assert alloc is not None and alloc.kind == capi.EXTERN_FUNC
        assert handle is not None and handle.kind == capi.EXTERN_FUNC
        self._handle_store.memory_ref = ctypes.byref(memory.of.memory)
        self._alloc = RawCall(context, ctypes.byref(alloc.of.func), 1)
        self._handle = RawCall(context, ctypes.byref(handle.of.func), 2)
        if compiled.grow_probe is not None:
            probe = capi.raw_export(context, instance, compiled.grow_probe.encode())
            assert probe is not None and probe.kind == capi.EXTERN_GLOBAL
            self._probe = GlobalReader(context, ctypes.byref(probe.of.global_))
        if wasi is not None and compiled.renewal is not None and RENEWAL_SUPPORTED:
            found = [capi.raw_export(context, instance, name.encode())
                     for name in compiled.renewal]
            assert all(item is not None and item.kind == capi.EXTERN_GLOBAL for item in found)
            self._renewal = Renewal(context, self._handle_store, found, compiled.restore,
                                    wasi if compiled.renew_wasi else None)
        if compiled.has_initialize:
            init = capi.raw_export(context, instance, b"_initialize")
            assert init is not None and init.kind == capi.EXTERN_FUNC
            self._initialize = RawCall(context, ctypes.byref(init.of.func), 1)
            self._initialize.void()

    def renew(self) -> bool:
        """Make this instance as new for its next request (:mod:`edge_runner.wasm.renewal`;
        its ``_initialize`` runs again at the start of that request, under its limits,
        its output logged with it, as a new instance's would); False if it cannot be
        renewed.  Raises if renewing failed: then discard it."""
        if self._renewal is None:
            return False
        self._renewal.renew(*self._memory())
        self._reinitialize = self._initialize is not None
        return True

    def close(self) -> None:
        """Free the store and its memory now (a failed instance sits in reference
        cycles with its exception's traceback until the garbage collector runs, and
        the memory budget has already released it).  The instance is unusable after."""
        self.store.close()

    def _refused(self) -> bool:
        """Did the store limit refuse a ``memory.grow`` (see :mod:`edge_runner.wasm.growprobe`)?"""
        return self._probe is not None and self._probe.i32() != 0

    def memory_bytes(self) -> int:
        """Linear memory this instance holds now (read at the end of its last call:
        only guest code grows it)."""
        if self._memory_size < 0:
            return self._handle_store.size()
        return self._memory_size

    def _memory(self) -> tuple[int, int]:
        """Address and size of the linear memory now, reading the address only when the
        size changed (only a growth moves it)."""
        size = self._handle_store.size()
        if size != self._memory_size:
            self._memory_base = self._handle_store.address()
            self._memory_size = size
        return self._memory_base, size

    def invoke(
        self, payload: object, request_id: str, *, speculation: Speculation | None = None,
        spent: float = 0.0,
    ) -> Response:
        """Run one request; raises :class:`InvocationError` (then discard the instance).

        ``speculation`` caps this call below the function's own limits
        (speculative inline execution, see :mod:`edge_runner.invoke.pool`); running out
        of it raises :class:`BudgetExceeded` instead of a fuel or time error.
        ``spent`` is wall time a speculative attempt already used, taken off the
        deadline.
        """
        envelope: bytes = payload  # type: ignore[assignment]  # from EdgeExecutor.encode
        handle = self._handle_store
        self.output.request_id = request_id
        fuel = self._fuel
        seconds = self._timeout - spent
        ticks = self._engine.deadline_ticks(seconds) if spent else self._ticks
        call_ticks, call_fuel = ticks, fuel
        if speculation is not None:
            call_ticks, call_fuel = min(ticks, speculation.ticks), min(fuel, speculation.fuel)
            seconds = min(seconds, speculation.seconds)
        handle.prepare(call_ticks, call_fuel)
        self._deadline.set(time.monotonic() + seconds)
        self.served += 1
        try:
            if self._reinitialize:  # renewed: initialize as a new instance does, then run
                self._reinitialize = False
                typing.cast(RawCall, self._initialize).void()
                self.output.flush()  # its own log line, as at creation
                handle.prepare(call_ticks, call_fuel)  # and the request its own budget
                self._deadline.set(time.monotonic() + seconds)
            size = len(envelope)
            ptr = self._alloc.i32_to_i32(size) & 0xFFFFFFFF
            base, length = self._memory()
            if ptr == 0 or ptr + size > length:
                if self._refused():
                    raise memory_failure(self._memory_limit)
                raise GuestFailure("bad_response", f"edge_alloc({size}) returned {ptr:#x}")
            ctypes.memmove(base + ptr, envelope, size)
            packed = self._handle.i32_i32_to_i64(ptr, size) & 0xFFFFFFFFFFFFFFFF
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            preempted = _preempted(exc, speculation, fuel, ticks)
            if preempted is not None:
                self.output.discard()
                raise preempted from exc
            raise classify(
                exc,
                function=self.name,
                request_id=request_id,
                memory_refused=self._refused(),
                memory_limit=self._memory_limit,
            ) from exc
        finally:
            self.output.flush()
        if self._probe is not None and self._probe.i32():
            raise memory_failure(self._memory_limit)
        return self._read_response(packed >> 32, packed & 0xFFFFFFFF)

    def _read_response(self, ptr: int, size: int) -> Response:
        if size > self._max_response:
            raise GuestFailure(
                "response_too_large",
                f"response of {size} bytes is over maxResponseBytes ({self._max_response})",
            )
        base, length = self._memory()
        if ptr + size > length:
            raise GuestFailure(
                "bad_response", f"response envelope {ptr:#x}+{size} is outside guest memory"
            )
        raw = ctypes.string_at(base + ptr, size)
        if size >= 8 and int.from_bytes(raw[4:8], "little") > MAX_RESPONSE_HEADERS:
            raise GuestFailure(
                "bad_response", f"response has more than {MAX_RESPONSE_HEADERS} headers"
            )
        try:
            return check_response(decode_response(raw))
        except EnvelopeError as exc:
            raise GuestFailure("bad_response", str(exc)) from exc


class EdgeExecutor:
    """The ``edge`` ABI: hot instances, speculative calls on the event loop."""

    abi = "edge"
    reusable = True
    inline = True
    timed_start = True

    def encode(self, request: HttpRequest) -> bytes:
        return encode_request(
            request.method.encode(),
            request.raw_path,
            request.query,
            [(k.encode(), v.encode()) for k, v in request.params],
            request.headers,
            request.body,
        )

    def instantiate(
        self, engine: WasmEngine, compiled: CompiledModule, name: str, spec: EdgeFunctionSpec,
        *, speculation: Speculation | None, request_id: str, renew: bool = False,
    ) -> EdgeInstance:
        return EdgeInstance(
            engine, compiled, name, spec, speculation=speculation, request_id=request_id,
            renew=renew,
        )


EDGE = EdgeExecutor()
