"""A low-overhead call into a wasm export with a fixed integer signature.

``wasmtime.Func.__call__`` asks the store for the function type, converts and
unroots every value and builds Python ``Val`` objects on every call (tens of
microseconds).  The ABI executors call the same two exports millions of times
with a signature checked once at load, so :class:`RawCall` keeps one
preallocated ``wasmtime_val_raw_t`` array per (store, export) and calls
``wasmtime_func_call_unchecked``, which is safe exactly because the signature
was verified (:func:`check_signature`).

This narrows wasmtime's private ``_ffi`` layer to one place; the wasmtime
version is pinned in pyproject.toml and a unit test compares the result with
``Func.__call__``.
"""

from __future__ import annotations

import ctypes

import wasmtime
from wasmtime import Func, Store, Trap, WasmtimeError, _bindings
from wasmtime import _ffi as ffi

_call_unchecked = _bindings._wasmtime_func_call_unchecked  # noqa: SLF001


def check_signature(store: Store, func: Func, params: list[str], results: list[str]) -> None:
    """Raise ``ValueError`` unless ``func`` has exactly this integer signature."""
    ty = func.type(store)
    got_params = [str(p) for p in ty.params]
    got_results = [str(r) for r in ty.results]
    if got_params != params or got_results != results:
        raise ValueError(
            f"expected ({', '.join(params)}) -> ({', '.join(results)}),"
            f" found ({', '.join(got_params)}) -> ({', '.join(got_results)})"
        )


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


def memory_base(store: Store, memory: wasmtime.Memory) -> tuple[int, int]:
    """Address and length of a linear memory right now (it may move on growth)."""
    context = store._context()  # noqa: SLF001
    extern = ctypes.byref(memory._memory)  # noqa: SLF001
    base = ctypes.cast(ffi.wasmtime_memory_data(context, extern), ctypes.c_void_p).value
    return int(base or 0), int(ffi.wasmtime_memory_data_size(context, extern))
