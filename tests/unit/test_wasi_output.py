"""The runner's own fd_write (edge_runner.wasm.wasi_output), called by real wasm via the engine."""

from __future__ import annotations

import struct

import pytest
import wasmtime

from edge_runner.wasm.engine import WasmEngine
from edge_runner.wasm.wasi_output import CALL_FUEL, IOVEC_FUEL, MAX_IOVECS, Streams

EBADF, EFAULT, EINVAL = 8, 21, 28
FUEL = 10_000_000
#: Guest memory: iovecs at 0, nwritten at 1020, text at 1024 (one 64 KiB page).
CALLER = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 1024) "hello, world")
  (func (export "write") (param i32 i32 i32 i32) (result i32)
    (call $w (local.get 0) (local.get 1) (local.get 2) (local.get 3))))"""


class Recorder:
    """A stream keeping at most ``limit`` bytes, recording every write."""

    def __init__(self, limit: int = 1 << 20) -> None:
        self.limit = limit
        self.writes: list[tuple[bytes, int]] = []

    def room(self) -> int:
        return max(0, self.limit - sum(len(kept) for kept, _ in self.writes))

    def write(self, kept: bytes, size: int) -> None:
        self.writes.append((kept, size))


class Guest:
    def __init__(self, engine: WasmEngine, stdout: Recorder, stderr: Recorder) -> None:
        self.store = engine.new_store(memory=1 << 20, wasi=wasmtime.WasiConfig(),
                                      output=Streams(stdout, stderr))
        self.store.set_fuel(FUEL)
        self.store.set_epoch_deadline(1_000_000)
        module = wasmtime.Module(engine.engine, CALLER)
        exports = engine.linker.instantiate(self.store, module).exports(self.store)
        memory, func = exports["memory"], exports["write"]
        assert isinstance(memory, wasmtime.Memory) and isinstance(func, wasmtime.Func)
        self.memory: wasmtime.Memory = memory
        self.func: wasmtime.Func = func

    def iovecs(self, *pairs: tuple[int, int]) -> int:
        raw = b"".join(struct.pack("<II", p, n) for p, n in pairs)
        self.memory.write(self.store, raw, 0)
        return len(pairs)

    def write(self, fd: int, count: int, iovs: int = 0, out: int = 1020) -> tuple[int, int]:
        errno = self.func(self.store, fd, iovs, count, out)
        assert isinstance(errno, int)
        return errno, struct.unpack("<I", self.memory.read(self.store, 1020, 1024))[0]


def test_stdout_and_stderr_reach_their_streams(engine: WasmEngine) -> None:
    out, err = Recorder(), Recorder()
    guest = Guest(engine, out, err)
    count = guest.iovecs((1024, 5), (1029, 7))
    assert guest.write(1, count) == (0, 12)
    assert guest.write(2, guest.iovecs((1031, 5))) == (0, 5)
    assert out.writes == [(b"hello, world", 12)]
    assert err.writes == [(b"world", 5)]


def test_only_what_the_stream_has_room_for_is_copied(engine: WasmEngine) -> None:
    out = Recorder(limit=7)
    guest = Guest(engine, out, Recorder())
    assert guest.write(1, guest.iovecs((1024, 5), (1029, 7), (0, 60000))) == (0, 60012)
    assert out.writes == [(b"hello, ", 60012)]


@pytest.mark.parametrize("fd", [0, 3, 4, -1])
def test_other_fds_do_not_exist(engine: WasmEngine, fd: int) -> None:
    out = Recorder()
    guest = Guest(engine, out, Recorder())
    assert guest.write(fd, guest.iovecs((1024, 5)))[0] == EBADF
    assert out.writes == []


@pytest.mark.parametrize(("iovecs", "iovs", "out"), [
    ([(1024, 65536)], 0, 1020),          # a buffer past the end of memory
    ([(0xFFFFFFF0, 32)], 0, 1020),       # a pointer that wraps around 32 bits
    ([(1024, 5)], 65534, 1020),          # the iovec array itself past the end
    ([(1024, 5)], 0, 65534),             # nwritten past the end
])
def test_bad_pointers_are_efault_and_write_nothing(
    engine: WasmEngine, iovecs: list[tuple[int, int]], iovs: int, out: int
) -> None:
    stdout = Recorder()
    guest = Guest(engine, stdout, Recorder())
    guest.iovecs(*iovecs)
    assert guest.write(1, len(iovecs), iovs=iovs, out=out)[0] == EFAULT
    assert stdout.writes == []


def test_too_many_iovecs_is_einval(engine: WasmEngine) -> None:
    guest = Guest(engine, Recorder(), Recorder())
    assert guest.write(1, MAX_IOVECS + 1)[0] == EINVAL
    assert guest.write(1, MAX_IOVECS, iovs=4096) == (0, 0)  # zeroed memory: empty iovecs


def test_each_write_costs_fuel(engine: WasmEngine) -> None:
    guest = Guest(engine, Recorder(), Recorder())
    count = guest.iovecs((1024, 5), (1029, 7), (1024, 1))
    before = guest.store.get_fuel()
    guest.write(1, count)
    spent = before - guest.store.get_fuel()
    charged = CALL_FUEL + 3 * IOVEC_FUEL
    assert charged <= spent < charged + 100  # plus the few instructions of the call


def test_a_write_beyond_the_fuel_left_stops_the_guest_out_of_fuel(engine: WasmEngine) -> None:
    out = Recorder()
    guest = Guest(engine, out, Recorder())
    guest.store.set_fuel(CALL_FUEL // 2)
    assert guest.write(1, guest.iovecs((1024, 5))) == (0, 5)  # this write still happens
    assert guest.store.get_fuel() == 0
    with pytest.raises(wasmtime.Trap) as trapped:  # stopped at its next fuel check
        guest.write(1, 1)
    assert trapped.value.trap_code == wasmtime.TrapCode.OUT_OF_FUEL
    assert out.writes == [(b"hello", 5)]
