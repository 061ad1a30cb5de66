"""Pure parts of the limits (issue #4): grow probe, budget, gates."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import wasmtime

from edge_runner.invoke.admission import Gate, GateFull
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.settings import RunnerSettings
from edge_runner.wasm import growprobe
from support.wasm import wat_to_wasm

GROWER = """(module
  (memory (export "memory") 1)
  (func (export "grow") (param i32) (result i32) (memory.grow (local.get 0))))"""

# Instructions of every immediate kind the decoder has to skip, around two grow sites.
KITCHEN_SINK = """(module
  (type $unary (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) func $double $grow)
  (data $bytes "abc")
  (global $g (mut i64) (i64.const -42))
  (func $double (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (func $grow (param i32) (result i32) (memory.grow (local.get 0)))
  (func (export "run") (param $n i32) (result i32)
    (local $v v128) (local $f f64)
    (local.set $v (v128.const i32x4 1 2 3 4))
    (local.set $v (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15
                    (local.get $v) (local.get $v)))
    (v128.store offset=16 align=4 (i32.const 0) (local.get $v))
    (local.set $v (v128.load32_lane 1 (i32.const 16) (local.get $v)))
    (drop (i32x4.extract_lane 2 (local.get $v)))
    (memory.fill (i32.const 64) (i32.const 7) (i32.const 8))
    (memory.copy (i32.const 80) (i32.const 64) (i32.const 8))
    (memory.init $bytes (i32.const 96) (i32.const 0) (i32.const 3))
    (local.set $f (f64.add (f64.const 1.5) (f64.convert_i32_s (i32.extend8_s (local.get $n)))))
    (global.set $g (i64.add (global.get $g) (i64.trunc_sat_f64_s (local.get $f))))
    (drop (select (result i32) (i32.const 1) (i32.const 2) (local.get $n)))
    (drop (ref.is_null (ref.func $double)))
    (drop (f32.const -0.25))
    (block $b0 (block $b1 (br_table $b0 $b1 $b0 (local.get $n))))
    (if (result i32) (i32.eqz (local.get $n))
      (then (call_indirect (type $unary) (i32.const 5) (i32.const 0)))
      (else (i32.add (memory.grow (local.get $n))
                     (call_indirect (type $unary) (i32.const 0) (i32.const 1)))))))"""


def _instance(wasm: bytes, pages: int) -> tuple[wasmtime.Store, wasmtime.Instance]:
    engine = wasmtime.Engine()
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=pages * 65536)
    return store, wasmtime.Instance(store, wasmtime.Module(engine, wasm), [])


def _refused(store: wasmtime.Store, instance: wasmtime.Instance) -> int:
    probe = instance.exports(store)[growprobe.PROBE_EXPORT]
    assert isinstance(probe, wasmtime.Global)
    return int(probe.value(store))


def test_probe_turns_on_only_when_the_store_limit_refuses_a_growth() -> None:
    result = growprobe.instrument(wat_to_wasm(GROWER))
    assert result.probe == growprobe.PROBE_EXPORT and result.sites == 1
    store, instance = _instance(result.wasm, pages=3)
    grow = instance.exports(store)["grow"]
    assert isinstance(grow, wasmtime.Func)
    assert grow(store, 2) == 1  # to 3 pages: at the cap, allowed
    assert _refused(store, instance) == 0
    assert grow(store, 1) == -1  # over the cap: refused, and now we know
    assert _refused(store, instance) == 1


def test_decoder_skips_every_kind_of_immediate_and_keeps_behaviour() -> None:
    original = wat_to_wasm(KITCHEN_SINK)
    result = growprobe.instrument(original)
    assert result.sites == 2
    for wasm in (original, result.wasm):
        store, instance = _instance(wasm, pages=4)
        run = instance.exports(store)["run"]
        assert isinstance(run, wasmtime.Func)
        assert run(store, 0) == 10
        assert run(store, 1) == 1 + 2  # grow 1 -> 2 pages (1), then grow(0) via the table (2)
    store, instance = _instance(result.wasm, pages=4)
    run = instance.exports(store)["run"]
    assert isinstance(run, wasmtime.Func)
    assert run(store, 9) == -1 + 1  # refused over the 4-page cap
    assert _refused(store, instance) == 1


def test_the_sample_functions_are_instrumented(hello_wasm: Path, wagi_wasm: Path) -> None:
    engine = wasmtime.Engine()
    for path in (hello_wasm, wagi_wasm):
        result = growprobe.instrument(path.read_bytes())
        assert result.probe is not None and result.sites >= 1
        wasmtime.Module.validate(engine, result.wasm)


def test_missing_global_and_export_sections_are_added_in_order() -> None:
    bare = wat_to_wasm("(module (memory 1) (func (drop (memory.grow (i32.const 1)))) (start 0))")
    result = growprobe.instrument(bare)
    module = wasmtime.Module(wasmtime.Engine(), result.wasm)
    assert [e.name for e in module.exports] == [growprobe.PROBE_EXPORT]


def test_a_module_that_never_grows_gets_no_probe() -> None:
    # Renewable: only the marker export is added (no global to restore, no grow helper).
    wasm = wat_to_wasm('(module (memory (export "memory") 1) (func (export "f")))')
    result = growprobe.instrument(wasm)
    assert (result.probe, result.sites, result.renewal) == (None, 0, ())
    module = wasmtime.Module(wasmtime.Engine(), result.wasm)
    assert [e.name for e in module.exports] == ["memory", "f", growprobe.RENEWABLE_EXPORT]
    # Not renewable either (a start function): returned as it is.
    started = wat_to_wasm("(module (memory 1) (func $s) (start $s))")
    assert growprobe.instrument(started) == growprobe.Instrumented(
        started, None, 0, None, "it has a start function")


def test_modules_the_decoder_cannot_read_are_reported() -> None:
    with pytest.raises(growprobe.Unsupported):
        growprobe.instrument(
            wat_to_wasm("(module (memory i64 1) (func (drop (memory.grow (i64.const 1)))))")
        )
    with pytest.raises(growprobe.Unsupported):
        growprobe.instrument(b"\x00asm\x0d\x00\x01\x00")  # a component, not a core module


def detect(**settings: Any) -> MemoryBudget:
    """The budget the runner sizes from these settings (and the environment)."""
    given = RunnerSettings(**settings)
    return MemoryBudget.detect(limit=given.memory_limit, default_limit=given.memory_default,
                               fraction=given.memory_fraction, cgroup_root=given.cgroup_root)


def test_budget_limit_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "memory.max").write_text(f"{3 * 2**30}\n")
    monkeypatch.setenv("EDGE_RUNNER_CGROUP_ROOT", str(tmp_path))
    monkeypatch.delenv("EDGE_RUNNER_MEMORY_LIMIT", raising=False)
    assert detect().limit == 3 * 2**30
    monkeypatch.setenv("EDGE_RUNNER_MEMORY_LIMIT", "536870912")  # the chart's downward API
    assert detect().limit == 512 * 2**20
    assert detect(memory_limit=2**30).limit == 2**30
    monkeypatch.delenv("EDGE_RUNNER_MEMORY_LIMIT")
    monkeypatch.setenv("EDGE_RUNNER_CGROUP_ROOT", str(tmp_path / "none"))
    detected = detect(memory_default=5 * 2**30)
    assert detected.limit == 5 * 2**30 and detected.baseline > 0


class _Pool:
    def __init__(self, budget: MemoryBudget, idle: int, last_used: float) -> None:
        self.budget = budget
        self.idle = idle
        self.last_used = last_used
        budget.register(self)

    def evict_idle(self) -> bool:
        if not self.idle:
            return False
        self.idle -= 1
        self.budget.release(100)
        return True


def test_budget_evicts_least_recently_used_idle_instances_before_refusing() -> None:
    budget = MemoryBudget(limit=1000, fraction=0.5, baseline=200, source="test")
    assert budget.usable == 300
    older, newer = _Pool(budget, idle=1, last_used=1.0), _Pool(budget, idle=1, last_used=2.0)
    assert budget.reserve(100) and budget.reserve(100) and budget.reserve(100)
    assert budget.reserve(100)  # evicts from the older pool
    assert (older.idle, newer.idle) == (0, 1)
    assert budget.reserve(100)
    assert newer.idle == 0
    assert not budget.reserve(100)
    assert budget.refusals == 1 and budget.headroom == 0


def test_gate_queues_in_order_and_bounds_queue_and_wait() -> None:
    async def scenario() -> None:
        gate = Gate(capacity=1, max_waiting=2)
        assert gate.try_enter() and not gate.try_enter()
        first = asyncio.ensure_future(gate.wait(5))
        second = asyncio.ensure_future(gate.wait(0.05))
        await asyncio.sleep(0)
        with pytest.raises(GateFull):
            await gate.wait(5)
        assert await second is False  # timed out, left the queue
        gate.leave()  # handed to the first waiter, not freed
        assert await first is True and gate.free == 0
        cancelled = asyncio.ensure_future(gate.wait(5))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        gate.leave()
        assert gate.free == 1 and gate.waiting == 0

    asyncio.run(scenario())
