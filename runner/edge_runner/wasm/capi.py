"""Every private wasmtime-py symbol the runner uses, in one module.

wasmtime-py's public API re-reflects types and builds ``Val`` objects on every
call; the hot paths (:mod:`edge_runner.wasm.fastcall`: calling the two exports
of the ``edge`` ABI; :mod:`edge_runner.wasm.wasi_output`: the guest's
``fd_write``; :mod:`edge_runner.abi.wagi`: a request body as stdin; the exports
a fresh ``edge`` instance needs, by name) reach the
C API through wasmtime-py's private ctypes layer (``_ffi``, ``_bindings``) and
the private handles of its objects.  Nothing else in the runner may import
them (tests/unit/test_layout.py checks), so a wasmtime upgrade that moves one
fails here, and tests/unit/test_capi.py compares each symbol with the public
API it stands in for.  The version is pinned in pyproject.toml.
"""

from __future__ import annotations

import ctypes
import typing

import wasmtime
from wasmtime import _bindings, _extern
from wasmtime import _ffi as ffi

#: ``wasmtime_val_raw_t``: one untyped argument/result slot of an unchecked call.
ValRaw = ffi.wasmtime_val_raw
#: ``wasmtime_val_t``: a typed value (what ``global_get`` fills).
Val = ffi.wasmtime_val_t
#: ``wasmtime_extern_t`` and the kind tag of a memory export.
Extern = ffi.wasmtime_extern_t
EXTERN_MEMORY: int = ffi.WASMTIME_EXTERN_MEMORY.value
#: A ``wasm_trap_t *`` out-parameter.
TrapPointer = ctypes.POINTER(ffi.wasm_trap_t)

func_call_unchecked = _bindings._wasmtime_func_call_unchecked  # noqa: SLF001
set_epoch_deadline = _bindings._wasmtime_context_set_epoch_deadline  # noqa: SLF001
set_fuel = _bindings._wasmtime_context_set_fuel  # noqa: SLF001
get_fuel = _bindings._wasmtime_context_get_fuel  # noqa: SLF001
global_get = _bindings._wasmtime_global_get  # noqa: SLF001
memory_size = _bindings._wasmtime_memory_data_size  # noqa: SLF001
caller_context = _bindings._wasmtime_caller_context  # noqa: SLF001
context_get_data = _bindings._wasmtime_context_get_data  # noqa: SLF001
caller_export_get = _bindings._wasmtime_caller_export_get  # noqa: SLF001
trap_new = _bindings._wasmtime_trap_new  # noqa: SLF001
instance_export_get = _bindings._wasmtime_instance_export_get  # noqa: SLF001
#: ``wasmtime_memory_data`` returning the address as an int (our own function
#: object: the binding's restype is a pointer type, slower to turn into an address).
memory_address = ffi.dll["wasmtime_memory_data"]
memory_address.restype = ctypes.c_void_p
memory_address.argtypes = _bindings._wasmtime_memory_data.argtypes  # noqa: SLF001
#: The C type of a host function called with raw values.
UncheckedCallback = _bindings.wasmtime_func_unchecked_callback_t
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


def context(store: wasmtime.Store) -> typing.Any:
    """The store's ``wasmtime_context_t *`` (stable for the store's life)."""
    return store._context()  # noqa: SLF001


def func_ref(func: wasmtime.Func) -> typing.Any:
    return ctypes.byref(func._func)  # noqa: SLF001


def memory_ref(memory: wasmtime.Memory) -> typing.Any:
    return ctypes.byref(memory._memory)  # noqa: SLF001


def global_ref(glob: wasmtime.Global) -> typing.Any:
    return ctypes.byref(glob._global)  # noqa: SLF001


def store_data_key(store: wasmtime.Store) -> int:
    """The id of the store's data as the C API reports it (see :func:`context_get_data`)."""
    return int(_bindings.wasmtime_context_get_data(context(store)) or 0)


def raise_error(error: typing.Any) -> typing.NoReturn:
    """Raise the :class:`wasmtime.WasmtimeError` a non-null ``wasmtime_error_t *`` is."""
    raise wasmtime.WasmtimeError._from_ptr(error)  # noqa: SLF001


def trap_from(trap: typing.Any) -> wasmtime.Trap:
    """The :class:`wasmtime.Trap` for a non-null ``wasm_trap_t *`` (takes ownership)."""
    return wasmtime.Trap._from_ptr(trap)  # noqa: SLF001


def define_unchecked(
    linker: wasmtime.Linker, module: str, name: str, kind: wasmtime.FuncType, callback: typing.Any
) -> None:
    """Define ``module.name`` in ``linker`` as a host function called with raw values."""
    module_name, field = module.encode(), name.encode()
    error = _bindings.wasmtime_linker_define_func_unchecked(
        linker.ptr(), ctypes.create_string_buffer(module_name), len(module_name),
        ctypes.create_string_buffer(field), len(field), kind.ptr(), callback, None,
        _NO_FINALIZER,
    )
    if error:
        raise_error(error)


def set_stdin_bytes(wasi: wasmtime.WasiConfig, data: bytes) -> None:
    """Give the guest ``data`` as its stdin (wasmtime-py has only a file path form)."""
    vec = ffi.wasm_byte_vec_t()
    buffer = (ctypes.c_ubyte * len(data)).from_buffer_copy(data)
    ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data), buffer)
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))  # takes ownership


def instance_export(store: wasmtime.Store, instance: wasmtime.Instance, name: bytes
                    ) -> typing.Any:
    """The export ``name`` of ``instance``, or None: what ``instance.exports(store)[name]``
    is, without wrapping every export of the instance first (a fresh instance per request
    looks up four or five of them)."""
    item = Extern()
    if not instance_export_get(context(store), ctypes.byref(instance._instance),  # noqa: SLF001
                               name, len(name), ctypes.byref(item)):
        return None
    return _extern.wrap_extern(item)
