"""Compiled modules under the memory budget (edge_runner.invoke.modules), in process with a
real engine, real modules and a real disk cache: modules beyond the budget are evicted
least recently used and come back from the disk cache with correct answers; a module
an instance uses is never evicted; without a disk artifact a module stays; a lost
artifact is a 503 until the configuration is applied again."""

from __future__ import annotations

import asyncio
import gc
import types
from pathlib import Path

import pytest

from edge_runner.errors import Unavailable
from edge_runner.invoke.admission import Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.catalog import Catalog, DesiredState
from edge_runner.invoke.modules import ResidentModules
from edge_runner.invoke.policy import SharedLimits
from edge_runner.metrics import RunnerMetrics
from edge_runner.wasm.engine import WasmEngine
from edge_runner.wasm.modcache import DiskCache
from support import guests
from support.inprocess import RecordingExecutor, body_of, metric, source, wasm_of

#: Instances reserve this much (the guests have 4 pages of memory).
INSTANCE = 4 * 65536
FUNCTIONS = 6
#: A data segment that makes each module's artifact about as large as an instance.
BULK = '(data (i32.const 131072) "' + "A" * 100_000 + '")'


def guest(body: bytes) -> str:
    return guests.constant_wat(body, extra=BULK)


def artifact_size(engine: WasmEngine, body: bytes) -> int:
    module = engine.compile(wasm_of(guest(body)), "edge").module
    return len(bytes(module.serialize()))


def catalog_with(engine: WasmEngine, executor: RecordingExecutor, budget: MemoryBudget,
                 cache: DiskCache | None) -> Catalog:
    return Catalog(engine=engine, executor=executor, metrics=RunnerMetrics(),
                   shared=SharedLimits(budget=budget, threads=Gate(4, 8)), disk_cache=cache)


def functions() -> DesiredState:
    return DesiredState([
        source(f"f{i}", guest(f"answer {i}".encode()),
               limits={"memory": str(INSTANCE)}, pool={"reuse": False})
        for i in range(FUNCTIONS)], [])


def test_modules_beyond_the_budget_are_evicted_and_reloaded_from_disk(
        engine: WasmEngine, executor: RecordingExecutor, tmp_path: Path) -> None:
    size = artifact_size(engine, b"answer 0")
    # Room for two modules and one instance at a time, not for six modules.
    budget = MemoryBudget(limit=2 * size + INSTANCE + size // 2, fraction=1.0, baseline=0,
                          source="test")

    async def scenario() -> None:
        catalog = catalog_with(engine, executor, budget, DiskCache(tmp_path, engine.fingerprint))
        snapshot = await catalog.apply(functions())
        loaded = catalog.modules.describe()
        assert loaded["loaded"] < FUNCTIONS and loaded["loadedBytes"] <= budget.usable
        assert 0 < budget.reserved <= budget.usable
        for _round in range(2):
            for i in range(FUNCTIONS):
                body = await body_of(snapshot.functions[f"f{i}"])
                assert body == f"answer {i}".encode()
                assert budget.reserved <= budget.usable
                assert catalog.modules.describe()["loaded"] <= 3
        # Round robin over more modules than fit: each call reloads its module.
        assert metric(catalog, "edge_module_cache_requests_total", result="reload") >= FUNCTIONS
        assert catalog.modules.evictions >= FUNCTIONS
        assert catalog.describe()["modules"] == catalog.modules.describe()

    asyncio.run(scenario())


def test_module_bytes_are_not_kept_once_compiled_and_evicted_modules_reload(
        engine: WasmEngine, executor: RecordingExecutor, tmp_path: Path) -> None:
    """The catalog keeps no source bytes (10,000 functions would keep every module twice):
    an evicted module comes back from the disk cache, not from the bytes it was given."""
    size = artifact_size(engine, b"answer 0")
    budget = MemoryBudget(limit=2 * size + INSTANCE + size // 2, fraction=1.0, baseline=0,
                          source="test")

    async def scenario() -> None:
        catalog = catalog_with(engine, executor, budget, DiskCache(tmp_path, engine.fingerprint))
        desired = functions()
        given = [source.wasm for source in desired.functions]
        snapshot = await catalog.apply(desired)
        del desired
        gc.collect()
        for wasm in given:
            holders = [r for r in gc.get_referrers(wasm)
                       if r is not given and not isinstance(r, types.FrameType)]
            assert holders == []
        evicted = [r for r in snapshot.functions.values() if not r.compiled.loaded]
        assert evicted
        for runtime in evicted:
            assert await body_of(runtime) == f"answer {runtime.name[1:]}".encode()
        assert metric(catalog, "edge_module_cache_requests_total", result="reload") \
            >= len(evicted)

    asyncio.run(scenario())


def test_a_module_in_use_stays_and_a_released_one_comes_back(
        engine: WasmEngine, tmp_path: Path) -> None:
    cache = DiskCache(tmp_path, engine.fingerprint)
    budget = MemoryBudget(limit=2**30, fraction=1.0, baseline=0, source="test")
    modules = ResidentModules(engine=engine, budget=budget, disk_cache=cache)
    compiled = engine.compile(wasm_of(guest(b"x")), "edge")
    artifact = bytes(compiled.module.serialize())
    assert cache.store(compiled.digest, artifact)
    slot = modules.add(compiled, resident_bytes=len(artifact), on_disk=True)
    assert budget.reserved == slot.resident_bytes > len(artifact)
    first = slot.acquire()
    assert first is compiled
    assert not slot.evict_idle()  # an instance uses it
    slot.release()
    assert slot.evict_idle() and not slot.loaded
    assert budget.reserved == 0
    again = slot.acquire()
    assert again is not compiled and again.digest == compiled.digest and slot.reloads == 1
    assert budget.reserved == slot.resident_bytes
    slot.release()
    assert modules.get(compiled.digest, "edge") is slot  # shared with another version
    slot.let_go()
    slot.let_go()  # the last version let it go: no longer counted
    assert budget.reserved == 0


def test_without_a_disk_artifact_a_module_is_never_evicted(
        engine: WasmEngine, executor: RecordingExecutor) -> None:
    size = artifact_size(engine, b"answer 0")
    budget = MemoryBudget(limit=2 * size, fraction=1.0, baseline=0, source="test")

    async def scenario() -> None:
        catalog = catalog_with(engine, executor, budget, None)
        snapshot = await catalog.apply(functions())
        assert catalog.modules.describe()["loaded"] == FUNCTIONS
        assert catalog.modules.evictions == 0
        assert budget.reserved > budget.usable  # counted all the same: no room for instances
        with pytest.raises(Unavailable) as refused:
            await body_of(snapshot.functions["f0"])
        assert refused.value.reason == "memory_budget"

    asyncio.run(scenario())


def test_a_lost_artifact_is_503_until_the_configuration_is_applied_again(
        engine: WasmEngine, executor: RecordingExecutor, tmp_path: Path) -> None:
    size = artifact_size(engine, b"answer 0")
    budget = MemoryBudget(limit=size + INSTANCE + size // 2, fraction=1.0, baseline=0,
                          source="test")
    cache = DiskCache(tmp_path, engine.fingerprint)

    async def scenario() -> None:
        catalog = catalog_with(engine, executor, budget, cache)
        snapshot = await catalog.apply(functions())
        evicted = next(r for r in snapshot.functions.values() if not r.compiled.loaded)
        cache.discard(evicted.digest)
        with pytest.raises(Unavailable) as refused:
            await body_of(evicted)
        assert refused.value.reason == "not_loaded"
        again = await catalog.apply(functions())
        assert again.functions[evicted.name] is not evicted
        assert await body_of(again.functions[evicted.name]) == \
            f"answer {evicted.name[1:]}".encode()

    asyncio.run(scenario())
