"""Every private wasmtime-py symbol the runner uses, in one module.

wasmtime-py's public API re-reflects types and builds ``Val`` objects on every
call; the hot paths (:mod:`edge_runner.wasm.fastcall`: calling the two exports
of the ``edge`` ABI; :mod:`edge_runner.wasm.wasi_output`: the guest's
``fd_write``; :mod:`edge_runner.abi.wagi`: a request body as stdin; creating a
fresh ``edge`` instance per request) reach the C API through wasmtime-py's
private ctypes layer (``_ffi``, ``_bindings``) and the private handles of its
objects.  Nothing else in the runner may import them (tests/unit/test_layout.py
checks), so a wasmtime upgrade that moves one fails here, and
tests/unit/test_capi.py compares each symbol with the public API it stands in
for.  The version is pinned in pyproject.toml.
"""

from __future__ import annotations

import ctypes
import typing

import wasmtime
from wasmtime import _bindings
from wasmtime import _ffi as ffi

#: ``wasmtime_val_raw_t``: one untyped argument/result slot of an unchecked call.
ValRaw = ffi.wasmtime_val_raw
Val = ffi.wasmtime_val_t  #: ``wasmtime_val_t``: a typed value (what ``global_get`` fills).
#: ``wasmtime_extern_t`` and the kind tags of its exports.
Extern = ffi.wasmtime_extern_t
EXTERN_MEMORY: int = ffi.WASMTIME_EXTERN_MEMORY.value
EXTERN_FUNC: int = ffi.WASMTIME_EXTERN_FUNC.value
EXTERN_GLOBAL: int = ffi.WASMTIME_EXTERN_GLOBAL.value
#: A ``wasm_trap_t *`` out-parameter.
TrapPointer = ctypes.POINTER(ffi.wasm_trap_t)

set_fuel = _bindings._wasmtime_context_set_fuel  # noqa: SLF001
get_fuel = _bindings._wasmtime_context_get_fuel  # noqa: SLF001
memory_size = _bindings._wasmtime_memory_data_size  # noqa: SLF001
caller_context = _bindings._wasmtime_caller_context  # noqa: SLF001
context_get_data = _bindings._wasmtime_context_get_data  # noqa: SLF001
caller_export_get = _bindings._wasmtime_caller_export_get  # noqa: SLF001
trap_new = _bindings._wasmtime_trap_new  # noqa: SLF001
#: ``(store *, callback, data, finalizer)``: :mod:`.deadline`'s hook, one per store.
set_deadline_callback = _bindings._wasmtime_store_epoch_deadline_callback  # noqa: SLF001
error_new = _bindings._wasmtime_error_new  # noqa: SLF001
#: ``wasmtime_memory_data`` returning the address as an int (our own function
#: object: the binding's restype is a pointer type, slower to turn into an address).
memory_address = ffi.dll["wasmtime_memory_data"]
memory_address.restype = ctypes.c_void_p
memory_address.argtypes = _bindings._wasmtime_memory_data.argtypes  # noqa: SLF001


def _unconverted(name: str, restype: typing.Any) -> typing.Any:
    """Another function object for the C function ``name``, without ``argtypes``: ctypes
    passes pointer objects as they are instead of checking each (a short call costs a
    third).  Each integer argument must be a ctypes object of the C parameter's type (a
    bare int would go as a C ``int``); for the hot paths only (fastcall, a fresh instance).
    """
    func = ffi.dll[name]  # a new function object each time: argtypes unset
    func.restype = restype
    return func


#: ``(context, func *, wasmtime_val_raw_t *, c_size_t, wasm_trap_t **) -> error address``
fast_call_unchecked = _unconverted("wasmtime_func_call_unchecked", ctypes.c_void_p)
#: ``(context, c_uint64) -> error address``
fast_set_fuel = _unconverted("wasmtime_context_set_fuel", ctypes.c_void_p)
#: ``(context, c_uint64)``
fast_set_epoch_deadline = _unconverted("wasmtime_context_set_epoch_deadline", None)
#: ``(context, memory *) -> size``, ``-> address``
fast_memory_size = _unconverted("wasmtime_memory_data_size", ctypes.c_size_t)
fast_memory_address = _unconverted("wasmtime_memory_data", ctypes.c_void_p)
#: ``(context, global *, wasmtime_val_t *)``; set: ``-> error address``
fast_global_get = _unconverted("wasmtime_global_get", None)
fast_global_set = _unconverted("wasmtime_global_set", ctypes.c_void_p)
#: ``(context, instance *, name, c_size_t, extern *) -> found``
_fast_export_get = _unconverted("wasmtime_instance_export_get", ctypes.c_bool)
#: ``(instance_pre *, context, instance *, wasm_trap_t **) -> error address``
_fast_instantiate = _unconverted("wasmtime_instance_pre_instantiate", ctypes.c_void_p)
_ErrorPointer = ctypes.POINTER(ffi.wasmtime_error_t)
#: ``wasmtime_engine_increment_epoch(wasm_engine_t *)``'s address, for :mod:`.ticker`.
increment_epoch = ctypes.cast(ffi.dll.wasmtime_engine_increment_epoch, ctypes.c_void_p).value


def raise_error_at(address: int) -> typing.NoReturn:
    """:func:`raise_error` for an error returned as an address (the ``fast_`` functions)."""
    raise_error(ctypes.cast(address, _ErrorPointer))


UncheckedCallback = _bindings.wasmtime_func_unchecked_callback_t  # a host function, raw values
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))


def context(store: wasmtime.Store) -> typing.Any:
    """The store's ``wasmtime_context_t *`` (stable for the store's life)."""
    return store._context()  # noqa: SLF001


_HANDLES = {wasmtime.Func: "_func", wasmtime.Memory: "_memory", wasmtime.Global: "_global"}


def handle_ref(item: wasmtime.Func | wasmtime.Memory | wasmtime.Global) -> typing.Any:
    """A reference to the C handle inside a wasmtime-py export object."""
    return ctypes.byref(getattr(item, _HANDLES[type(item)]))


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


# ---- A fresh ``edge`` instance (one per request) without wasmtime-py's objects: the C calls
# of Store, WasiConfig (argv/env encoded once), instantiation and exports (~25 us of C).

#: ``wasmtime_instance_t``: an instance handle (valid while its store lives).
RawInstance = ffi.wasmtime_instance_t
_store_new = _bindings._wasmtime_store_new  # noqa: SLF001
_store_context = _bindings._wasmtime_store_context  # noqa: SLF001
_store_delete = _bindings._wasmtime_store_delete  # noqa: SLF001
_store_limiter = _bindings._wasmtime_store_limiter  # noqa: SLF001
_set_wasi = _bindings._wasmtime_context_set_wasi  # noqa: SLF001
_wasi_config_new = _bindings._wasi_config_new  # noqa: SLF001
_wasi_config_delete = _bindings._wasi_config_delete  # noqa: SLF001
_wasi_set_argv = _bindings._wasi_config_set_argv  # noqa: SLF001
_wasi_set_env = _bindings._wasi_config_set_env  # noqa: SLF001
_CharArray = ctypes.POINTER(ctypes.POINTER(ctypes.c_char))


def _char_array(strings: list[bytes]) -> typing.Any:
    """A ``char **`` of NUL-terminated copies of ``strings`` (kept alive by the result)."""
    return ctypes.cast((ctypes.c_char_p * len(strings))(*strings), _CharArray)


class WasiRecipe:
    """A WASI configuration for many stores: argv and env, the rest as a new ``WasiConfig``
    (no preopens, stdio or stdin).  Each store gets a new ``wasi_config_t`` (it is
    consumed), but the C setters copy the strings: the ``char **`` are built once."""

    __slots__ = ("_argc", "_argv", "_envc", "_names", "_values")

    def __init__(self, argv: list[str], env: list[tuple[str, str]]) -> None:
        self._argc = len(argv)
        self._argv = _char_array([a.encode() for a in argv])
        self._envc = len(env)
        self._names = _char_array([name.encode() for name, _ in env])
        self._values = _char_array([value.encode() for _, value in env])

    def apply(self, store_context: typing.Any) -> None:
        """Give the store (its ``wasmtime_context_t *``) a new WASI context."""
        config = _wasi_config_new()
        if not (_wasi_set_argv(config, self._argc, self._argv)
                and _wasi_set_env(config, self._envc, self._names, self._values)):
            _wasi_config_delete(config)
            raise wasmtime.WasmtimeError("invalid WASI argv or env")
        error = _set_wasi(store_context, config)  # consumes config
        if error:
            raise_error(error)


class RawStore:
    """A ``wasmtime_store_t`` deleted by :meth:`close` or with this object.  Its data is
    ``data_key``, an integer (no slab entry) that :mod:`edge_runner.wasm.wasi_output`
    maps to the store's output; ``keep`` is held for the store's life (that output)."""

    __slots__ = ("_ptr", "context", "keep")

    def __init__(self, engine: wasmtime.Engine, data_key: int, keep: object) -> None:
        self._ptr: typing.Any = _store_new(engine.ptr(), data_key, _NO_FINALIZER)
        self.context: typing.Any = _store_context(self._ptr)
        self.keep = keep

    def ptr(self) -> typing.Any:
        """The ``wasmtime_store_t *`` (as :meth:`wasmtime.Store.ptr`)."""
        return self._ptr

    def set_limits(self, *, memory_size: int, table_elements: int, instances: int,
                   tables: int, memories: int) -> None:
        """What :meth:`wasmtime.Store.set_limits` sets."""
        _store_limiter(self._ptr, memory_size, table_elements, instances, tables, memories)

    def close(self) -> None:
        """Delete the store (its memories and instances); idempotent."""
        if ptr := self._ptr:
            self._ptr = None
            _store_delete(ptr)

    def __del__(self) -> None:
        self.close()


def instantiate(pre: wasmtime.InstancePre, store_context: typing.Any) -> typing.Any:
    """``pre.instantiate(store)`` as a :data:`RawInstance`, raising what that raises."""
    instance = RawInstance()
    trap = TrapPointer()
    error = _fast_instantiate(pre.ptr(), store_context, ctypes.byref(instance),
                              ctypes.byref(trap))
    if error:
        raise_error_at(error)
    if trap:
        raise trap_from(trap)
    return instance


def raw_export(store_context: typing.Any, instance: typing.Any, name: bytes) -> typing.Any:
    """The export ``name`` of a :data:`RawInstance` as an :data:`Extern`, or None."""
    item = Extern()
    if not _fast_export_get(store_context, ctypes.byref(instance), name,
                            ctypes.c_size_t(len(name)), ctypes.byref(item)):
        return None
    return item


# ---- Component model (the ``wasi-http`` ABI) ---------------------------------------------
#
# wasmtime-py's component host functions re-reflect their whole type on every call
# (``FuncType._from_ptr`` then every case of every variant: ~100 us per call) and
# convert ``list<u8>`` one element at a time.  :func:`add_component_func` registers a
# host function whose types are reflected once, on its first call, and "primed"
# (:func:`prime`): each type object keeps its cases, fields and element type, and
# a ``list<u8>`` converts with one strided copy.  Values keep wasmtime-py's public
# Python shapes (``Variant``, ``Record``, ``bytes``...); tests/unit/test_capi.py
# compares them with the stock conversions.

import threading  # noqa: E402

from wasmtime import StoreContext  # noqa: E402
from wasmtime.component import _types as component_types  # noqa: E402

#: ``wasmtime_component_val_t``: one component value as the C API passes it.
ComponentVal = ffi.wasmtime_component_val_t
_VAL_SIZE = ctypes.sizeof(ComponentVal)
_VAL_PAYLOAD = ffi.wasmtime_component_val_t.of.offset
_U8_KIND: int = ffi.WASMTIME_COMPONENT_U8.value


def _u8_template() -> bytes:
    one = ffi.wasmtime_component_val_t()
    one.kind = _U8_KIND
    one.of.u8 = 0
    return ctypes.string_at(ctypes.addressof(one), _VAL_SIZE)


_U8_ONE = _u8_template()


def _bytes_from_list(c: typing.Any) -> bytes:
    raw = c.of.list
    try:
        if not raw.size:
            return b""
        base = ctypes.addressof(raw.data.contents)
        return ctypes.string_at(base, raw.size * _VAL_SIZE)[_VAL_PAYLOAD::_VAL_SIZE]
    finally:
        # u8 elements own nothing: free the array without visiting them.
        ffi.wasmtime_component_vallist_delete(ctypes.byref(raw))


def _bytes_to_list(_store: typing.Any, val: typing.Any, ptr: typing.Any) -> None:
    if not isinstance(val, (bytes, bytearray, memoryview)):
        raise TypeError("expected bytes value")
    size = len(val)
    raw = ffi.wasmtime_component_vallist_t()
    ffi.wasmtime_component_vallist_new_uninit(raw, size)
    if size:
        image = bytearray(_U8_ONE * size)
        image[_VAL_PAYLOAD::_VAL_SIZE] = val
        ctypes.memmove(ctypes.addressof(raw.data.contents), bytes(image), len(image))
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
    ptr.contents.of.list = raw


def _list_converters(ty: typing.Any, element: typing.Any) -> None:
    def to_c(store: typing.Any, val: typing.Any, ptr: typing.Any) -> None:
        if not isinstance(val, list):
            raise TypeError("expected list value")
        raw = ffi.wasmtime_component_vallist_t()
        ffi.wasmtime_component_vallist_new_uninit(raw, len(val))
        for i, item in enumerate(val):
            element.convert_to_c(store, item, ctypes.pointer(raw.data[i]))
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_LIST
        ptr.contents.of.list = raw

    lift = element.convert_from_c

    def from_c(c: typing.Any) -> list[typing.Any]:
        raw = c.of.list
        try:
            out = []
            for i in range(raw.size):
                item = raw.data[i]
                out.append(lift(item))
                item.kind = ffi.WASMTIME_COMPONENT_BOOL
                item.of.boolean = False
            return out
        finally:
            ffi.wasmtime_component_vallist_delete(ctypes.byref(raw))

    _override(ty, to_c, from_c, list)


def _tuple_converters(ty: typing.Any, elements: list[typing.Any]) -> None:
    def to_c(store: typing.Any, val: typing.Any, ptr: typing.Any) -> None:
        if not isinstance(val, tuple) or len(val) != len(elements):
            raise TypeError("expected tuple value")
        raw = ffi.wasmtime_component_valtuple_t()
        ffi.wasmtime_component_valtuple_new_uninit(raw, len(elements))
        for i, (kind, item) in enumerate(zip(elements, val, strict=True)):
            kind.convert_to_c(store, item, ctypes.pointer(raw.data[i]))
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_TUPLE
        ptr.contents.of.tuple = raw

    def from_c(c: typing.Any) -> tuple[typing.Any, ...]:
        raw = c.of.tuple
        try:
            out = []
            for i, kind in zip(range(raw.size), elements, strict=False):
                item = raw.data[i]
                out.append(kind.convert_from_c(item))
                item.kind = ffi.WASMTIME_COMPONENT_BOOL
                item.of.boolean = False
            return tuple(out)
        finally:
            ffi.wasmtime_component_valtuple_delete(ctypes.byref(raw))

    _override(ty, to_c, from_c)


def _record_converters(ty: typing.Any, fields: list[tuple[str, typing.Any]]) -> None:
    def to_c(store: typing.Any, val: typing.Any, ptr: typing.Any) -> None:
        raw = ffi.wasmtime_component_valrecord_t()
        ffi.wasmtime_component_valrecord_new_uninit(raw, len(fields))
        for i, (name, kind) in enumerate(fields):
            kind.convert_to_c(store, getattr(val, name), ctypes.pointer(raw.data[i].val))
            raw.data[i].name = ffi.str_to_capi(name)
        ptr.contents.kind = ffi.WASMTIME_COMPONENT_RECORD
        ptr.contents.of.record = raw

    def from_c(c: typing.Any) -> typing.Any:
        raw = c.of.record
        try:
            out = component_types.Record()
            for i, (name, kind) in zip(range(raw.size), fields, strict=False):
                item = raw.data[i].val
                setattr(out, name, kind.convert_from_c(item))
                item.kind = ffi.WASMTIME_COMPONENT_BOOL
                item.of.boolean = False
            return out
        finally:
            ffi.wasmtime_component_valrecord_delete(raw)

    _override(ty, to_c, from_c)


def _override(ty: typing.Any, to_c: typing.Any, from_c: typing.Any, kind: type | None = None
              ) -> None:
    """Give one type object its own converters (instance attributes shadow the methods)."""
    ty.convert_to_c, ty.convert_from_c = to_c, from_c
    if kind is not None:
        ty.add_classes = lambda s: s.add(kind)


class HostHandle:
    """A host resource handed to the guest as ``own<T>``: its table key and type id."""

    __slots__ = ("kind", "rep")

    def __init__(self, rep: int, kind: int) -> None:
        self.rep = rep
        self.kind = kind


#: The ``wasmtime_context_t *`` of the call in progress on this thread (resources
#: convert through it).
_call = threading.local()


def _resource_from_c(c: typing.Any) -> int:
    """A host resource the guest passes (``own`` or ``borrow``), as its ``rep``.

    Converting a borrow to the host side releases it, also inside a list (wasmtime-py's
    own ``ResourceAny`` left a ``list<borrow<pollable>>`` open: "borrow handles still
    remain" at the end of the guest's call).
    """
    found = ffi.take_pointer(c.of, "resource")
    host = ctypes.POINTER(ffi.wasmtime_component_resource_host_t)()
    try:
        error = ffi.wasmtime_component_resource_any_to_host(_call.context, found,
                                                            ctypes.byref(host))
        if error:
            raise_error(error)
        rep = int(ffi.wasmtime_component_resource_host_rep(host))
        ffi.wasmtime_component_resource_host_delete(host)
    finally:
        ffi.wasmtime_component_resource_any_delete(found)
    return rep


def _resource_to_c(_store: typing.Any, val: typing.Any, ptr: typing.Any) -> None:
    if not isinstance(val, HostHandle):
        raise TypeError("expected a HostHandle")
    host = ffi.wasmtime_component_resource_host_new(True, val.rep, val.kind)
    found = ctypes.POINTER(ffi.wasmtime_component_resource_any_t)()
    error = ffi.wasmtime_component_resource_host_to_any(_call.context, host,
                                                        ctypes.byref(found))
    ffi.wasmtime_component_resource_host_delete(host)
    if error:
        raise_error(error)
    ptr.contents.kind = ffi.WASMTIME_COMPONENT_RESOURCE
    ptr.contents.of.resource = found


def prime(ty: typing.Any) -> typing.Any:
    """Make a reflected component value type convert without reflecting again; returns it.

    Resources (``own``/``borrow``) become host-side integers (the ``rep`` of a host
    resource) and a host returns :class:`HostHandle` for a new one.
    """
    if isinstance(ty, component_types.OwnType):
        _override(ty, _resource_to_c, _resource_from_c, HostHandle)
    elif isinstance(ty, component_types.BorrowType):
        _override(ty, _resource_to_c, _resource_from_c, int)
    elif isinstance(ty, component_types.ListType):
        element = prime(ty.element)
        if isinstance(element, component_types.U8):
            _override(ty, _bytes_to_list, _bytes_from_list, bytes)
        else:
            _list_converters(ty, element)
    elif isinstance(ty, component_types.TupleType):
        _tuple_converters(ty, [prime(e) for e in ty.elements])
    elif isinstance(ty, component_types.RecordType):
        _record_converters(ty, [(name, prime(kind)) for name, kind in ty.fields])
    elif isinstance(ty, component_types.VariantLikeType):
        _freeze_cases(ty)
    return ty


def _freeze_cases(ty: typing.Any) -> None:
    """Variant, option, result: cases, tagging and each case's classes computed once."""
    cases = [(name, None if kind is None else prime(kind)) for name, kind in ty._cases()]  # noqa: SLF001
    ty._cases = lambda: cases  # noqa: SLF001
    tagged = ty._tagged()  # noqa: SLF001
    ty._tagged = lambda: tagged  # noqa: SLF001
    tests: list[tuple[str, typing.Any, tuple[type, ...]]] = []
    for name, kind in cases:
        classes: set[type] = set()
        if kind is not None:
            kind.add_classes(classes)
        tests.append((name, kind, tuple(classes)))

    def lower(store: typing.Any, val: typing.Any) -> tuple[str, typing.Any]:
        # The rules of wasmtime-py's VariantLikeType._lower, without rebuilding classes.
        if tagged and not isinstance(val, component_types.Variant):
            raise TypeError("expected Variant type")
        for name, kind, classes in tests:
            if tagged:
                if name != val.tag:
                    continue
            elif kind is None:
                if val is not None:
                    continue
            elif not isinstance(val, classes):
                continue
            if kind is None:
                return name, None
            raw = ffi.wasmtime_component_val_t()
            kind.convert_to_c(store, val.payload if tagged else val, ctypes.pointer(raw))
            return name, ffi.wasmtime_component_val_new(ctypes.byref(raw))
        raise ValueError("value not valid for this variant")

    ty._lower = lower  # noqa: SLF001


class _HostFunc:
    __slots__ = ("func", "params", "result")

    def __init__(self, func: typing.Callable[..., typing.Any]) -> None:
        self.func = func
        self.params: list[typing.Any] | None = None
        self.result: typing.Any = None


_HOST_FUNCS: dict[int, _HostFunc] = {}
_host_ids = iter(range(1, 2**62))


def _component_func_impl(
    idx: typing.Any, context: typing.Any, ty_raw: typing.Any, args: typing.Any, _nargs: int,
    results: typing.Any, _nresults: int,
) -> typing.Any:
    entry = _HOST_FUNCS[idx or 0]

    def run(store: StoreContext | None) -> None:
        _call.context = context
        if entry.params is None:
            with component_types.FuncType._from_ptr(  # noqa: SLF001
                    ty_raw, owner=StoreContext(context)) as kind:
                result = kind.result
                entry.result = None if result is None else prime(result)
                entry.params = [prime(t) for _, t in kind.params]
        values = [t.convert_from_c(args[i]) for i, t in enumerate(entry.params)]
        answer = entry.func(store, *values)
        if entry.result is not None:
            entry.result.convert_to_c(store, answer, results)

    return _guarded(context, run)


def _guarded(context: typing.Any, run: typing.Callable[[StoreContext | None], None]) -> typing.Any:
    """Run a host function; an exception becomes the error the guest's call fails with.

    Unlike wasmtime-py's ``catch_exceptions`` it keeps no process-wide "last
    exception" (two threads failing at once would swap theirs): the caller learns
    why from its own request state (:mod:`edge_runner.abi.wasihttp_host`).  Host
    functions get no store object (resources arrive as integers, see :func:`prime`).
    """
    try:
        run(None)
        return 0
    except Exception as exc:
        error = exc if isinstance(exc, wasmtime.WasmtimeError) else wasmtime.WasmtimeError(
            f"host function failed: {exc!r}"[:300])
        return ctypes.cast(error._consume(), ctypes.c_void_p).value  # noqa: SLF001


def _component_func_finalize_impl(idx: typing.Any) -> None:
    _HOST_FUNCS.pop(idx or 0, None)


_component_func = ffi.wasmtime_component_func_callback_t(_component_func_impl)
_component_func_finalize = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(_component_func_finalize_impl)


def add_component_func(
    instance: typing.Any, name: str, func: typing.Callable[..., typing.Any]
) -> None:
    """``LinkerInstance.add_func`` whose types are reflected once (see above)."""
    instance._assert_not_locked()  # noqa: SLF001
    encoded = name.encode()
    idx = next(_host_ids)
    _HOST_FUNCS[idx] = _HostFunc(func)
    error = ffi.wasmtime_component_linker_instance_add_func(
        instance.ptr(), ctypes.create_string_buffer(encoded), len(encoded), _component_func,
        idx, _component_func_finalize,
    )
    if error:
        _HOST_FUNCS.pop(idx, None)
        raise_error(error)


def call_component_func(func: typing.Any, store: wasmtime.Store, params: list[typing.Any],
                        args: typing.Sequence[typing.Any]) -> None:
    """Call a component function with no result, its ``params`` types primed already."""
    _call.context = store._context()  # noqa: SLF001
    raw = (ffi.wasmtime_component_val_t * len(args))()
    for i, (kind, value) in enumerate(zip(params, args, strict=True)):
        kind.convert_to_c(store, value, ctypes.pointer(raw[i]))
    try:
        error = ffi.wasmtime_component_func_call(
            ctypes.byref(func._func), store._context(), raw, len(args), None, 0)  # noqa: SLF001
    finally:
        for i in range(len(args)):
            ffi.wasmtime_component_val_delete(ctypes.byref(raw[i]))
    if error:
        raise_error(error)


def component_func_params(func: typing.Any, store: wasmtime.Store) -> list[typing.Any]:
    """The primed parameter types of a component function (reflect once, reuse)."""
    return [prime(t) for _, t in func.type(store).params]
