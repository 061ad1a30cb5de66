"""A low-overhead call into a wasm export with a fixed integer signature.

``wasmtime.Func.__call__`` asks the store for the function type, converts and
unroots every value and builds Python ``Val`` objects on every call (tens of
microseconds).  The ABI executors call the same two exports millions of times
with a signature checked once at load, so :class:`RawCall` keeps one
preallocated ``wasmtime_val_raw_t`` array per (store, export) and calls
``wasmtime_func_call_unchecked``, which is safe exactly because the signature
was verified at load (:func:`edge_api.abi.check_module`).

This and :mod:`edge_runner.wasi_output` (the guest's ``fd_write``) are the only
users of wasmtime's private ``_ffi`` layer; the wasmtime version is pinned in
pyproject.toml, a unit test compares RawCall with ``Func.__call__`` and
tests/unit/test_wasi_output.py drives fd_write from real wasm.
"""

from __future__ import annotations

import ctypes

import wasmtime
from wasmtime import Func, Store, Trap, WasmtimeError, _bindings
from wasmtime import _ffi as ffi

_call_unchecked = _bindings._wasmtime_func_call_unchecked  # noqa: SLF001


class RawCall:
    """Calls one export of one store; not thread-safe (neither is a store)."""

    __slots__ = ("_context", "_func", "_size", "_trap", "_values")

    def __init__(self, store: Store, func: Func, slots: int) -> None:
        self._context = store._context()  # noqa: SLF001 - stable for the store's life
        self._func = ctypes.byref(func._func)  # noqa: SLF001
        self._size = slots
        self._values = (ffi.wasmtime_val_raw * slots)()
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()

    def _invoke(self) -> None:
        trap = self._trap
        error = _call_unchecked(
            self._context, self._func, self._values, self._size, ctypes.byref(trap)
        )
        if error:
            raise WasmtimeError._from_ptr(error)  # noqa: SLF001
        if trap:
            raised = Trap._from_ptr(trap)  # noqa: SLF001
            self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
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


_set_deadline = _bindings._wasmtime_context_set_epoch_deadline  # noqa: SLF001
_set_fuel = _bindings._wasmtime_context_set_fuel  # noqa: SLF001
#: ``wasmtime_memory_data`` returning the address as an int (our own function object;
#: also used by :mod:`edge_runner.wasi_output`), and ``wasmtime_memory_data_size``.
memory_address = ffi.dll["wasmtime_memory_data"]
memory_address.restype = ctypes.c_void_p
memory_address.argtypes = _bindings._wasmtime_memory_data.argtypes  # noqa: SLF001
memory_size = _bindings._wasmtime_memory_data_size  # noqa: SLF001


class StoreHandle:
    """Per-call store settings and memory access without wrapper overhead."""

    __slots__ = ("_context", "_memory")

    def __init__(self, store: Store, memory: wasmtime.Memory) -> None:
        self._context = store._context()  # noqa: SLF001
        self._memory = ctypes.byref(memory._memory)  # noqa: SLF001

    def prepare(self, ticks: int, fuel: int) -> None:
        """Set the epoch deadline (ticks from now) and the fuel of the next call."""
        _set_deadline(self._context, ticks)
        error = _set_fuel(self._context, fuel)
        if error:
            raise WasmtimeError._from_ptr(error)  # noqa: SLF001

    def memory(self) -> tuple[int, int]:
        """Address and length of the linear memory right now (it moves on growth)."""
        return memory_address(self._context, self._memory) or 0, memory_size(
            self._context, self._memory
        )


_global_get = _bindings._wasmtime_global_get  # noqa: SLF001


class GlobalReader:
    """Reads one i32 global of one store without wrapper overhead (the grow probe)."""

    __slots__ = ("_context", "_global", "_value", "_value_ref")

    def __init__(self, store: Store, glob: wasmtime.Global) -> None:
        self._context = store._context()  # noqa: SLF001
        self._global = ctypes.byref(glob._global)  # noqa: SLF001
        self._value = ffi.wasmtime_val_t()
        self._value_ref = ctypes.byref(self._value)

    def i32(self) -> int:
        _global_get(self._context, self._global, self._value_ref)
        return int(self._value.of.i32)
