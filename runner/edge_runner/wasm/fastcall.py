"""A low-overhead call into a wasm export with a fixed integer signature.

``wasmtime.Func.__call__`` asks the store for the function type, converts and
unroots every value and builds Python ``Val`` objects on every call (tens of
microseconds).  The ABI executors call the same two exports millions of times
with a signature checked once at load, so :class:`RawCall` keeps one
preallocated ``wasmtime_val_raw_t`` array per (store, export) and calls
``wasmtime_func_call_unchecked``, which is safe exactly because the signature
was verified at load (:func:`edge_api.abi.check_module`).

Each class takes the store's ``wasmtime_context_t *`` and a reference to the raw
export (what :func:`edge_runner.wasm.capi.raw_export` finds, no wasmtime-py
object needed); ``of`` builds one from wasmtime-py's public objects instead.

The C API is reached through :mod:`edge_runner.wasm.capi`, the one module that
touches wasmtime-py's private layer; a unit test compares RawCall with
``Func.__call__``.
"""

from __future__ import annotations

import ctypes

import wasmtime
from wasmtime import Func, Store

from edge_runner.wasm import capi

_call_unchecked = capi.fast_call_unchecked


class RawCall:
    """Calls one export of one store; not thread-safe (neither is a store)."""

    __slots__ = ("_context", "_func", "_size", "_trap", "_trap_ref", "_values")

    def __init__(self, context: object, func: object, slots: int) -> None:
        self._context = context
        self._func = func
        self._size = ctypes.c_size_t(slots)
        self._values = (capi.ValRaw * slots)()
        self._trap = capi.TrapPointer()
        self._trap_ref = ctypes.byref(self._trap)

    @classmethod
    def of(cls, store: Store, func: Func, slots: int) -> RawCall:
        return cls(capi.context(store), capi.handle_ref(func), slots)

    def _invoke(self) -> None:
        error = _call_unchecked(self._context, self._func, self._values, self._size,
                                self._trap_ref)
        if error:
            capi.raise_error_at(error)
        trap = self._trap
        if trap:
            raised = capi.trap_from(trap)  # owns the wasm_trap_t now: use a new out-param
            self._trap = capi.TrapPointer()
            self._trap_ref = ctypes.byref(self._trap)
            raise raised

    def i32_to_i32(self, a: int) -> int:
        values = self._values
        values[0].i32 = a
        self._invoke()
        return int(values[0].i32)

    def i32_i32_to_i64(self, a: int, b: int) -> int:
        values = self._values
        values[0].i32 = a
        values[1].i32 = b
        self._invoke()
        return int(values[0].i64)

    def void(self) -> None:
        self._invoke()


_set_deadline = capi.fast_set_epoch_deadline
_set_fuel = capi.fast_set_fuel
_memory_address = capi.fast_memory_address
_memory_size = capi.fast_memory_size
_u64 = ctypes.c_uint64


class StoreHandle:
    """Per-call store settings and memory access without wrapper overhead.

    ``memory_ref`` may be set after construction (a store is prepared before the
    instance whose memory it is exists); the memory methods need it.
    """

    __slots__ = ("_context", "memory_ref")

    def __init__(self, context: object, memory: object = None) -> None:
        self._context = context
        self.memory_ref = memory

    @classmethod
    def of(cls, store: Store, memory: wasmtime.Memory) -> StoreHandle:
        return cls(capi.context(store), capi.handle_ref(memory))

    def prepare(self, ticks: int, fuel: int) -> None:
        """Set the epoch deadline (ticks from now) and the fuel of the next call."""
        _set_deadline(self._context, _u64(ticks))
        error = _set_fuel(self._context, _u64(fuel))
        if error:
            capi.raise_error_at(error)

    def memory(self) -> tuple[int, int]:
        """Address and length of the linear memory right now (it moves on growth)."""
        return _memory_address(self._context, self.memory_ref) or 0, int(_memory_size(
            self._context, self.memory_ref
        ))

    def size(self) -> int:
        """Length of the linear memory right now."""
        return int(_memory_size(self._context, self.memory_ref))

    def address(self) -> int:
        """Address of the linear memory right now: it can only change when it grows, so
        while :meth:`size` is unchanged an address read before is still right."""
        return _memory_address(self._context, self.memory_ref) or 0


_global_get = capi.fast_global_get


class GlobalReader:
    """Reads one i32 global of one store without wrapper overhead (the grow probe)."""

    __slots__ = ("_context", "_global", "_value", "_value_ref")

    def __init__(self, context: object, glob: object) -> None:
        self._context = context
        self._global = glob
        self._value = capi.Val()
        self._value_ref = ctypes.byref(self._value)

    @classmethod
    def of(cls, store: Store, glob: wasmtime.Global) -> GlobalReader:
        return cls(capi.context(store), capi.handle_ref(glob))

    def i32(self) -> int:
        _global_get(self._context, self._global, self._value_ref)
        return int(self._value.of.i32)
