"""Renewed instances (``pool.reuse: false``): as new to every request, at a fraction of the cost.

Against docs/abi.md "Instances and reuse" and :mod:`edge_runner.wasm.renewal`:
a renewed instance answers exactly as a new one would (its globals, its data,
``memory.size`` and ``memory.grow``, memory grown by an earlier request zeroed,
its WASI context), the pool says which instances it renewed, and modules whose
state could outlive a call are never renewed.  Real guests (WAT), real wasmtime.
"""

from __future__ import annotations

import asyncio
import ctypes
import struct

import pytest

from edge_runner.errors import GuestFailure
from edge_runner.metrics import RunnerMetrics
from edge_runner.wasm import growprobe, renewal
from edge_runner.wasm.fastcall import StoreHandle
from support.guests import ALLOC, WASI, _data
from support.inprocess import Pools, body_of, http_request
from support.wasm import wat_to_wasm

PAGE = 65536
FRESH: dict[str, object] = {"reuse": False}
_FIELDS = 6


def grower_wat() -> str:
    """Each request: reads a byte of its data segment then overwrites it, grows the
    memory by a page, reads the first word of that page then writes it, counts in a
    global; answers what it read and saw (six u32)."""
    header = struct.pack("<III", 200, 0, 4 * _FIELDS)
    return f"""(module
  (memory (export "memory") 2)
  {ALLOC}
  (global $count (mut i32) (i32.const 0))
  (global $scratch (mut i64) (i64.const 7))
  (data (i32.const 1024) "{_data(header)}")
  (data (i32.const 4096) "A")
  (func (export "edge_handle") (param i32 i32) (result i64) (local $old i32)
    (i32.store (i32.const 1036) (i32.load8_u (i32.const 4096)))
    (i32.store8 (i32.const 4096) (i32.const 90))
    (local.set $old (memory.grow (i32.const 1)))
    (i32.store (i32.const 1040) (local.get $old))
    (i32.store (i32.const 1044) (i32.load (i32.mul (local.get $old) (i32.const {PAGE}))))
    (i32.store (i32.mul (local.get $old) (i32.const {PAGE})) (i32.const 0xdeadbeef))
    (i32.store (i32.const 1048) (memory.size))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 1052) (global.get $count))
    (global.set $scratch (i64.add (global.get $scratch) (i64.const 1)))
    (i32.store (i32.const 1056) (i32.wrap_i64 (global.get $scratch)))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {len(header) + 4 * _FIELDS}))))
"""


def _fields(body: bytes) -> tuple[int, ...]:
    return struct.unpack(f"<{_FIELDS}I", body)


async def _answers(pools: Pools, module: str, times: int, pool: dict[str, object]
                   ) -> tuple[list[tuple[int, ...]], dict[str, object]]:
    runtime = pools.runtime(module, pool=pool)
    found = [_fields(await body_of(runtime)) for _ in range(times)]
    return found, runtime.describe()


def test_a_renewed_instance_answers_as_a_new_one(pools: Pools) -> None:
    new = (ord("A"), 2, 0, 3, 1, 8)  # data byte, grow's old size, the new page, size, globals
    found, pool = asyncio.run(_answers(pools, grower_wat(), 5, FRESH))
    assert found == [new] * 5
    assert (pool["coldStarts"], pool["renewed"], pool["idle"]) == (1, 5, 1)
    # The same guest kept hot shows what renewal undid (so this test can tell them apart).
    hot, _ = asyncio.run(_answers(pools, grower_wat(), 3, {"reuse": True}))
    assert hot == [new, (90, 3, 0, 4, 2, 9), (90, 4, 0, 5, 3, 10)]


def test_renewals_are_counted_per_function(pools: Pools) -> None:
    metrics = RunnerMetrics()
    runtime = pools.runtime(grower_wat(), name="grower", pool=FRESH,
                            events=metrics.pool_events("grower"))

    async def scenario() -> None:
        for _ in range(4):
            await body_of(runtime)

    asyncio.run(scenario())
    sample = metrics.registry.get_sample_value
    assert sample("edge_instance_renewals_total", {"function": "grower"}) == 4
    assert sample("edge_cold_starts_total", {"function": "grower"}) == 1


def test_renewal_keeps_the_memory_it_grew_and_zeroes_it(pools: Pools) -> None:
    runtime = pools.runtime(grower_wat(), pool=FRESH)

    async def scenario() -> None:
        for _ in range(20):
            assert _fields(await body_of(runtime))[2] == 0  # never the last one's 0xdeadbeef

    asyncio.run(scenario())
    (idle,) = runtime._idle
    assert idle.memory_bytes() == 3 * PAGE  # grown once, not once per request


def test_without_instance_renewal_every_request_gets_a_new_instance(pools: Pools) -> None:
    runtime = pools.runtime(grower_wat(), pool=FRESH, renew=False)  # --instance-renewal false

    async def scenario() -> list[tuple[int, ...]]:
        return [_fields(await body_of(runtime)) for _ in range(3)]

    assert asyncio.run(scenario()) == [(ord("A"), 2, 0, 3, 1, 8)] * 3
    pool = runtime.describe()
    assert (pool["coldStarts"], pool["renewed"], pool["idle"]) == (3, 0, 0)


def test_instances_of_a_module_with_a_start_function_are_made_anew(pools: Pools) -> None:
    module = grower_wat().replace("(func (export", "(func $s) (start $s) (func (export", 1)
    found, pool = asyncio.run(_answers(pools, module, 3, FRESH))
    assert found == [(ord("A"), 2, 0, 3, 1, 8)] * 3
    assert (pool["coldStarts"], pool["renewed"], pool["idle"]) == (3, 0, 0)


def test_a_renewal_gives_a_new_wasi_context_when_the_guest_can_change_it(pools: Pools) -> None:
    # fd_fdstat_get(1) then fd_close(1): a kept WASI context would answer EBADF next time.
    module = f"""(module
  (import "{WASI}" "fd_fdstat_get" (func $stat (param i32 i32) (result i32)))
  (import "{WASI}" "fd_close" (func $close (param i32) (result i32)))
  (memory (export "memory") 2)
  {ALLOC}
  (data (i32.const 1024) "{_data(struct.pack("<III", 200, 0, 4))}")
  (func (export "edge_handle") (param i32 i32) (result i64)
    (i32.store (i32.const 1036) (call $stat (i32.const 1) (i32.const 2048)))
    (drop (call $close (i32.const 1)))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 16))))
"""
    runtime = pools.runtime(module, pool=FRESH)
    assert runtime.compiled.acquire().renew_wasi

    async def scenario() -> list[bytes]:
        return [await body_of(runtime) for _ in range(3)]

    assert asyncio.run(scenario()) == [struct.pack("<I", 0)] * 3
    assert runtime.describe()["renewed"] == 3


def test_a_failed_request_is_never_renewed(pools: Pools) -> None:
    runtime = pools.runtime(grower_wat().replace(
        "(local.set $old", "(if (i32.eq (global.get $count) (i32.const 0)) (then "
        "(if (i32.gt_u (local.get 1) (i32.const 400)) (then unreachable)))) (local.set $old",
        1), pool=FRESH)

    async def scenario() -> None:
        await body_of(runtime)
        with pytest.raises(GuestFailure, match=r"unreachable|trap"):
            await body_of(runtime, http_request(body=b"x" * 1000))
        assert _fields(await body_of(runtime))[4] == 1

    asyncio.run(scenario())
    pool = runtime.describe()
    assert (pool["coldStarts"], pool["renewed"], pool["discarded"]) == (2, 2, 1)


@pytest.mark.parametrize(("wat", "why"), [
    ('(module (memory 1) (table 1 funcref) (func (table.set (i32.const 0) (ref.null func))))',
     "it uses table.set"),
    ('(module (memory 1) (data "x") (func (data.drop 0)))', "it uses data.drop"),
    ('(module (memory 1) (table 1 funcref) (func (drop (table.grow (ref.null func) '
     '(i32.const 1)))))', "it uses table.grow"),
    ('(module (import "m" "g" (global (mut i32))) (memory 1) (func))',
     "it imports globals, tables, memories or tags"),
    ('(module (import "m" "mem" (memory 1)) (func))',
     "it imports globals, tables, memories or tags"),
    ("(module (func))", "it has no memory of its own, more than one, or a shared one"),
    ("(module (memory 1 1 shared) (func))",
     "it has no memory of its own, more than one, or a shared one"),
    ("(module (memory 1) (global (mut funcref) (ref.null func)) (func))",
     "it has a mutable reference global"),
])
def test_modules_whose_state_can_outlive_a_call_are_not_renewable(wat: str, why: str) -> None:
    result = growprobe.instrument(wat_to_wasm(wat))
    assert (result.renewal, result.why_not) == (None, why)


def test_renewable_modules_export_each_mutable_global_and_the_size() -> None:
    result = growprobe.instrument(wat_to_wasm(grower_wat()))
    # $next (ALLOC), $count, $scratch, then the page count the rewrite adds after the probe.
    assert result.renewal == tuple(f"{growprobe.RENEW_PREFIX}{i}" for i in (0, 1, 2, 4))
    assert result.probe == growprobe.PROBE_EXPORT and result.sites == 1


def test_data_pages_are_the_pages_not_all_zeros() -> None:
    page = renewal._PAGE
    memory = bytes(page) + b"a" * page + bytes(page - 1) + b"z" + bytes(page)
    assert renewal.data_pages(memory) == {1: b"a" * page, 2: bytes(page - 1) + b"z"}
    assert renewal.data_pages(bytes(3 * page)) == {}


@pytest.mark.skipif(not renewal.SUPPORTED, reason="Linux: /proc/self/pagemap")
def test_the_kernel_tells_which_pages_were_touched() -> None:
    import mmap as mmap_module
    page = renewal._PAGE
    area = mmap_module.mmap(-1, 8 * page, flags=mmap_module.MAP_PRIVATE | mmap_module.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    assert renewal._written_pages(base, 8 * page) == bytes(8)
    area[2 * page] = 1
    area[5 * page + 7] = 1
    assert renewal._written_pages(base, 8 * page) == bytes([0, 0, 1, 0, 0, 1, 0, 0])
    renewal._discard(base, 8 * page)
    assert renewal._written_pages(base, 8 * page) == bytes(8)
    assert area[2 * page] == 0  # dropped pages read as zeros again


@pytest.mark.skipif(not renewal.SUPPORTED, reason="Linux: /proc/self/pagemap")
@pytest.mark.parametrize("limit", [64, 0], ids=["page-by-page", "drop-all"])
def test_a_renewal_writes_back_data_and_zeroes_the_rest(limit: int) -> None:
    import mmap as mmap_module
    page = renewal._PAGE
    restore = renewal.Restore()
    restore.pages = {1: b"d" * page}  # the module's data: page 1; the rest zeros
    area = mmap_module.mmap(-1, 6 * page, flags=mmap_module.MAP_PRIVATE | mmap_module.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    area[:] = b"x" * (6 * page)  # a request wrote everything (no data left as it was)
    renewal.Renewal(None, StoreHandle(None), [], restore, None, max_pages=limit).renew(
        base, 6 * page)
    assert area[:] == bytes(page) + b"d" * page + bytes(4 * page)


def test_renewal_is_off_where_the_kernel_does_not_say_which_pages_were_written() -> None:
    assert renewal._kernel_reports_writes() == renewal.SUPPORTED
    assert not renewal._kernel_reports_writes(lambda _base, size: bytes(size // renewal._PAGE))
