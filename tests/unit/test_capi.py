"""Each private wasmtime-py symbol in edge_runner.wasm.capi against the public API it
stands in for, on real modules: a wasmtime upgrade that moves or changes one fails here.

(fd_write's symbols, caller_context, caller_export_get, trap_new, define_unchecked and
store_data_key, are driven by real wasm in test_wasi_output.py as well.)
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import wasmtime

from edge_runner.wasm import capi
from edge_runner.wasm.fastcall import GlobalReader, RawCall, StoreHandle

GUEST = """(module
  (memory (export "memory") 2)
  (global $g (export "g") (mut i32) (i32.const 7))
  (func (export "inc") (param i32) (result i32) (global.set $g (local.get 0))
    (i32.add (local.get 0) (i32.const 1)))
  (func (export "pack") (param i32 i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get 0)) (i64.const 32))
            (i64.extend_i32_u (local.get 1))))
  (func (export "trap") unreachable)
  (func (export "spin") (loop br 0)))"""


def engine(*, epochs: bool = False) -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = epochs
    return wasmtime.Engine(config)


class Guest:
    def __init__(self, *, epochs: bool = False) -> None:
        self.engine = engine(epochs=epochs)
        self.store = wasmtime.Store(self.engine)
        self.store.set_fuel(10**9)
        if epochs:
            self.store.set_epoch_deadline(10**6)
        instance = wasmtime.Instance(self.store, wasmtime.Module(self.engine, GUEST), [])
        self.exports = instance.exports(self.store)

    def func(self, name: str) -> wasmtime.Func:
        found = self.exports[name]
        assert isinstance(found, wasmtime.Func)
        return found


def test_raw_calls_return_what_public_calls_return() -> None:
    guest = Guest()
    inc, pack = guest.func("inc"), guest.func("pack")
    for value in (0, 41, -1, 2**31 - 1):
        assert RawCall.of(guest.store, inc, 1).i32_to_i32(value) == inc(guest.store, value)
    raw = RawCall.of(guest.store, pack, 2)
    got = raw.i32_i32_to_i64(0x1234, 0x5678) & 0xFFFFFFFFFFFFFFFF
    assert got == pack(guest.store, 0x1234, 0x5678) & 0xFFFFFFFFFFFFFFFF == 0x1234_0000_5678


def test_a_raw_export_by_name_is_the_public_export() -> None:
    guest = Guest()
    instance = wasmtime.Instance(guest.store, wasmtime.Module(guest.engine, GUEST), [])
    public = instance.exports(guest.store)
    context, raw = capi.context(guest.store), instance._instance
    kinds = {wasmtime.Func: capi.EXTERN_FUNC, wasmtime.Memory: capi.EXTERN_MEMORY,
             wasmtime.Global: capi.EXTERN_GLOBAL}
    for name in ("memory", "g", "inc", "pack", "trap"):
        found = capi.raw_export(context, raw, name.encode())
        assert found is not None and found.kind == kinds[type(public[name])], name
    memory, public_memory = capi.raw_export(context, raw, b"memory"), public["memory"]
    assert isinstance(public_memory, wasmtime.Memory)
    assert StoreHandle(context, ctypes.byref(memory.of.memory)).size() == \
        public_memory.data_len(guest.store) == 2 * 65536
    inc = capi.raw_export(context, raw, b"inc")
    assert RawCall(context, ctypes.byref(inc.of.func), 1).i32_to_i32(41) == 42
    glob, public_glob = capi.raw_export(context, raw, b"g"), public["g"]
    assert isinstance(public_glob, wasmtime.Global)
    assert GlobalReader(context, ctypes.byref(glob.of.global_)).i32() == \
        public_glob.value(guest.store) == 41
    assert capi.raw_export(context, raw, b"missing") is None


def test_a_trap_in_a_raw_call_is_the_public_trap() -> None:
    guest = Guest()
    trap = guest.func("trap")
    with pytest.raises(wasmtime.Trap) as public:
        trap(guest.store)
    raw = RawCall.of(guest.store, trap, 1)
    for _ in range(2):  # the trap out-parameter is renewed after each trap
        with pytest.raises(wasmtime.Trap) as private:
            raw.void()
        assert private.value.trap_code == public.value.trap_code
        assert private.value.trap_code == wasmtime.TrapCode.UNREACHABLE


def test_store_handle_sets_the_fuel_and_deadline_the_store_reports() -> None:
    guest = Guest(epochs=True)
    memory = guest.exports["memory"]
    assert isinstance(memory, wasmtime.Memory)
    handle = StoreHandle.of(guest.store, memory)
    handle.prepare(1, 12_345)
    assert guest.store.get_fuel() == 12_345
    left = ctypes.c_uint64()
    assert not capi.get_fuel(capi.context(guest.store), ctypes.byref(left))
    assert left.value == 12_345
    # One tick of deadline: two epoch increments stop an endless loop.
    handle.prepare(1, 10**9)
    guest.engine.increment_epoch()
    guest.engine.increment_epoch()
    with pytest.raises(wasmtime.Trap) as stopped:
        guest.func("spin")(guest.store)
    assert stopped.value.trap_code == wasmtime.TrapCode.INTERRUPT


def test_memory_address_and_size_are_the_public_ones_also_after_growth() -> None:
    guest = Guest()
    memory = guest.exports["memory"]
    assert isinstance(memory, wasmtime.Memory)
    handle = StoreHandle.of(guest.store, memory)
    for _ in range(2):
        address, size = handle.memory()
        assert size == memory.data_len(guest.store) == memory.size(guest.store) * 65536
        assert address == ctypes.addressof(memory.data_ptr(guest.store).contents)
        memory.grow(guest.store, 3)


def test_global_reader_reads_what_the_public_global_holds() -> None:
    guest = Guest()
    glob = guest.exports["g"]
    assert isinstance(glob, wasmtime.Global)
    reader = GlobalReader.of(guest.store, glob)
    assert reader.i32() == glob.value(guest.store) == 7
    guest.func("inc")(guest.store, 99)
    assert reader.i32() == glob.value(guest.store) == 99


STDIN_READER = """(module
  (import "wasi_snapshot_preview1" "fd_read" (func $r (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "read") (result i32)
    (i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 256))
    (drop (call $r (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (i32.load (i32.const 8))))"""


def read_stdin(wasi: wasmtime.WasiConfig) -> bytes:
    eng = engine()
    store = wasmtime.Store(eng)
    store.set_fuel(10**9)
    store.set_wasi(wasi)
    linker = wasmtime.Linker(eng)
    linker.define_wasi()
    exports = linker.instantiate(store, wasmtime.Module(eng, STDIN_READER)).exports(store)
    read, memory = exports["read"], exports["memory"]
    assert isinstance(read, wasmtime.Func) and isinstance(memory, wasmtime.Memory)
    count = read(store)
    assert isinstance(count, int)
    return bytes(memory.read(store, 64, 64 + count))


def test_stdin_bytes_reach_the_guest_as_a_stdin_file_does(tmp_path: Path) -> None:
    body = b"name=Ada&x=\x00\xff"
    private = wasmtime.WasiConfig()
    capi.set_stdin_bytes(private, body)
    public = wasmtime.WasiConfig()
    (tmp_path / "stdin").write_bytes(body)
    public.stdin_file = str(tmp_path / "stdin")
    assert read_stdin(private) == read_stdin(public) == body


def test_an_unchecked_host_function_behaves_as_a_public_one() -> None:
    eng = engine()
    i32 = wasmtime.ValType.i32()
    kind = wasmtime.FuncType([i32, i32], [i32])

    def add(_env: int, _caller: object, values: ctypes.Array[capi.ValRaw], _n: int) -> int:
        values[0].i32 = values[0].i32 + values[1].i32
        return 0

    callback = capi.UncheckedCallback(add)
    caller = """(module (import "host" "add" (func $a (param i32 i32) (result i32)))
      (func (export "run") (param i32 i32) (result i32) (call $a (local.get 0) (local.get 1))))"""
    results = []
    for private in (True, False):
        store = wasmtime.Store(eng)
        store.set_fuel(10**6)
        linker = wasmtime.Linker(eng)
        if private:
            capi.define_unchecked(linker, "host", "add", kind, callback)
        else:
            linker.define_func("host", "add", kind, lambda a, b: a + b)
        run = linker.instantiate(store, wasmtime.Module(eng, caller)).exports(store)["run"]
        assert isinstance(run, wasmtime.Func)
        results.append(run(store, 40, 2))
    assert results == [42, 42]



# ---- The raw path of a fresh edge instance -------------------------------------------------

WASI_PROBE = """(module
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $as (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $ag (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $es (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $eg (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (export "g") (mut i32) (i32.const 5))
  (func (export "probe") (result i32)
    (drop (call $as (i32.const 0) (i32.const 4)))
    (drop (call $ag (i32.const 16) (i32.const 1024)))
    (drop (call $es (i32.const 8) (i32.const 12)))
    (drop (call $eg (i32.const 512) (i32.add (i32.const 1024) (i32.load (i32.const 4)))))
    (i32.add (i32.load (i32.const 4)) (i32.load (i32.const 12))))
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""
ARGV = ["fn"]
ENV = [("GREETING", "hello"), ("EMPTY", ""), ("UTF8", "grüß")]
#: memory_size, table_elements, instances, tables, memories
LIMITS = {"memory_size": 2 * 65536, "table_elements": 10, "instances": 1, "tables": 1,
          "memories": 1}


def linker_of(eng: wasmtime.Engine) -> wasmtime.Linker:
    linker = wasmtime.Linker(eng)
    linker.define_wasi()
    return linker


def public_run(eng: wasmtime.Engine, module: wasmtime.Module) -> list[object]:
    """What the probe guest reports through wasmtime-py's public objects: its argv and env
    block, then two growths of one page under LIMITS."""
    store = wasmtime.Store(eng)
    store.set_fuel(10**9)
    store.set_limits(**LIMITS)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ARGV
    wasi.env = ENV
    store.set_wasi(wasi)
    exports = linker_of(eng).instantiate_pre(module).instantiate(store).exports(store)
    probe, grow, memory = exports["probe"], exports["grow"], exports["memory"]
    assert isinstance(probe, wasmtime.Func) and isinstance(grow, wasmtime.Func)
    assert isinstance(memory, wasmtime.Memory)
    size = probe(store)
    assert isinstance(size, int)
    block = bytes(memory.read(store, 0, 16)) + bytes(memory.read(store, 1024, 1024 + size))
    return [block, grow(store, 1), grow(store, 1)]


def raw_run(eng: wasmtime.Engine, module: wasmtime.Module, recipe: capi.WasiRecipe
            ) -> list[object]:
    """The same through RawStore, WasiRecipe, instantiate and raw_export."""
    store = capi.RawStore(eng, 0, None)
    store.set_limits(**LIMITS)
    recipe.apply(store.context)
    context = store.context
    StoreHandle(context).prepare(10**6, 10**9)
    instance = capi.instantiate(linker_of(eng).instantiate_pre(module), context)
    probe, grow, memory = (capi.raw_export(context, instance, name)
                           for name in (b"probe", b"grow", b"memory"))
    assert probe.kind == grow.kind == capi.EXTERN_FUNC and memory.kind == capi.EXTERN_MEMORY
    size = RawCall(context, ctypes.byref(probe.of.func), 1).i32_to_i32(0)
    address, _ = StoreHandle(context, ctypes.byref(memory.of.memory)).memory()
    block = ctypes.string_at(address, 16) + ctypes.string_at(address + 1024, size)
    grower = RawCall(context, ctypes.byref(grow.of.func), 1)
    found = [block, grower.i32_to_i32(1), grower.i32_to_i32(1)]
    store.close()
    store.close()  # idempotent
    return found


def test_a_raw_store_with_a_wasi_recipe_is_a_store_with_its_wasi_config_and_limits() -> None:
    eng = engine()
    module = wasmtime.Module(eng, WASI_PROBE)
    recipe = capi.WasiRecipe(ARGV, ENV)
    public = public_run(eng, module)
    block = public[0]
    assert isinstance(block, bytes)
    assert b"fn\0GREETING=hello\0EMPTY=\0UTF8=gr\xc3\xbc\xc3\x9f\0" in block
    assert public[1:] == [1, -1]  # the second page is over LIMITS
    for _ in range(3):  # one recipe, many stores
        assert raw_run(eng, module, recipe) == public


def test_raw_instantiation_fails_as_public_instantiation_does() -> None:
    eng = engine()
    too_big = wasmtime.Module(eng, '(module (memory (export "memory") 3))')
    trapping = wasmtime.Module(eng, '(module (func $s unreachable) (start $s))')
    for module, kind in ((too_big, wasmtime.WasmtimeError), (trapping, wasmtime.Trap)):
        public = wasmtime.Store(eng)
        public.set_fuel(10**6)
        public.set_limits(**LIMITS)
        with pytest.raises(kind) as expected:
            linker_of(eng).instantiate_pre(module).instantiate(public)
        raw = capi.RawStore(eng, 0, None)
        raw.set_limits(**LIMITS)
        capi.set_fuel(raw.context, 10**6)
        with pytest.raises(kind) as got:
            capi.instantiate(linker_of(eng).instantiate_pre(module), raw.context)
        assert type(got.value) is type(expected.value)
        if isinstance(expected.value, wasmtime.Trap):
            assert isinstance(got.value, wasmtime.Trap)
            assert got.value.trap_code == expected.value.trap_code == wasmtime.TrapCode.UNREACHABLE


def test_errors_and_64_bit_values_pass_through_the_unconverted_calls() -> None:
    eng = engine()
    exiting = """(module
      (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
      (memory (export "memory") 1)
      (func (export "quit") (param i32) (call $exit (local.get 0))))"""
    store = wasmtime.Store(eng)
    store.set_fuel(10**6)
    store.set_wasi(wasmtime.WasiConfig())
    quit_ = linker_of(eng).instantiate(store, wasmtime.Module(eng, exiting)).exports(store)["quit"]
    assert isinstance(quit_, wasmtime.Func)
    with pytest.raises(wasmtime.ExitTrap) as public:
        quit_(store, 3)
    with pytest.raises(wasmtime.ExitTrap) as private:  # an error, not a trap, from the call
        RawCall.of(store, quit_, 1).i32_to_i32(3)
    assert private.value.code == public.value.code == 3
    handle = StoreHandle(capi.context(store))
    handle.prepare(2**40 + 1, 2**40 + 7)  # past 32 bits: passed as uint64, not int
    assert store.get_fuel() == 2**40 + 7
