"""A fresh ``edge`` instance per request (``pool.reuse: false``), in process, with real guests.

Against docs/abi.md "Instances and reuse": every request sees the state right
after its instance's own initialization (start function, ``_initialize``), never
what an earlier request left; the WASI sandbox, guest output and every limit
(memory through the store limit and the grow probe, fuel, time) hold on each
fresh instance as on a hot one.  What the raw creation path of
:mod:`edge_runner.abi.edge` could get wrong: initialization that grows memory,
modules without ``_initialize``, a start function, a refused growth at
initialization, the memory a hot instance reports after growing.
"""

from __future__ import annotations

import asyncio
import logging
import struct

import pytest

from edge_runner.errors import GuestFailure, GuestTimeout
from support import guests
from support.guests import ALLOC, WASI, _data
from support.inprocess import (
    GUEST_MEMORY,
    MiB,
    Pools,
    body_of,
    budget_of,
    failure,
    fuel_wat,
    http_request,
    trap_if_big_wat,
)

PAGE = 65536
FRESH: dict[str, object] = {"reuse": False}


def stateful_wat(*, initialize: bool = True, start: bool = False) -> str:
    """Answers three u32: a global, a memory cell and the memory size in pages, after
    adding 1 to the global and the cell.  ``_initialize`` (or a start function) sets
    them to 100 and 1000 and grows the memory from 4 to 6 pages."""
    init = """
    (global.set $count (i32.const 100))
    (i32.store (i32.const 2048) (i32.const 1000))
    (drop (memory.grow (i32.const 2)))"""
    if start:
        setup = f"(start $setup) (func $setup {init})"
    elif initialize:
        setup = f'(func (export "_initialize") {init})'
    else:
        setup = ""
    return f"""(module
  (memory (export "memory") 4)
  {ALLOC}
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 1024) "{_data(struct.pack('<III', 200, 0, 12))}")
  {setup}
  (func (export "edge_handle") (param i32 i32) (result i64)
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (i32.store (i32.const 2048) (i32.add (i32.load (i32.const 2048)) (i32.const 1)))
    (i32.store (i32.const 1036) (global.get $count))
    (i32.store (i32.const 1040) (i32.load (i32.const 2048)))
    (i32.store (i32.const 1044) (memory.size))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const 24))))
"""


def printing_wat() -> str:
    """Writes ``init`` to stdout in ``_initialize`` and ``handled`` in each request."""
    return f"""(module
  (import "{WASI}" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 4)
  {ALLOC}
  (data (i32.const 1024) "{_data(guests.response_envelope(200, b"ok"))}")
  (data (i32.const 3000) "init\\n")
  (data (i32.const 3008) "handled\\n")
  (func $print (param i32 i32)
    (i32.store (i32.const 2000) (local.get 0))
    (i32.store (i32.const 2004) (local.get 1))
    (drop (call $write (i32.const 1) (i32.const 2000) (i32.const 1) (i32.const 2008))))
  (func (export "_initialize") (call $print (i32.const 3000) (i32.const 5)))
  (func (export "edge_handle") (param i32 i32) (result i64)
    (call $print (i32.const 3008) (i32.const 8))
    (global.set $next (i32.const 65536))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32))
            (i64.const {len(guests.response_envelope(200, b"ok"))}))))
"""


def answers(body: bytes) -> tuple[int, int, int]:
    count, cell, pages = struct.unpack("<III", body)
    return count, cell, pages


async def answers_of(pools: Pools, module: str, times: int, **options: object
                     ) -> list[tuple[int, int, int]]:
    runtime = pools.runtime(module, **options)  # type: ignore[arg-type]
    return [answers(await body_of(runtime)) for _ in range(times)]


@pytest.mark.parametrize("setup", ["_initialize", "start"])
def test_every_fresh_request_sees_the_state_right_after_initialization(
    pools: Pools, setup: str
) -> None:
    module = stateful_wat(start=setup == "start")
    fresh = asyncio.run(answers_of(pools, module, 5, pool=FRESH))
    assert fresh == [(101, 1001, 6)] * 5
    # The same guest on a hot instance keeps its state: the test can tell them apart.
    hot = asyncio.run(answers_of(pools, module, 3, pool={"reuse": True}))
    assert hot == [(101, 1001, 6), (102, 1002, 6), (103, 1003, 6)]


def test_a_module_without_initialize_starts_from_its_declared_state(pools: Pools) -> None:
    assert asyncio.run(answers_of(pools, stateful_wat(initialize=False), 4, pool=FRESH)) == [
        (1, 1, 4)] * 4


def test_fresh_requests_on_worker_threads_see_pristine_instances_too(pools: Pools) -> None:
    runtime = pools.runtime(stateful_wat(), pool={**FRESH, "maxInstances": 4})
    thread = pools.runtime(stateful_wat(), name="threads", pool=FRESH)
    thread._demote(3600.0, "test: always on a worker thread")

    async def scenario() -> list[tuple[int, int, int]]:
        bodies = await asyncio.gather(*(body_of(r) for r in [runtime, thread] * 8))
        return [answers(b) for b in bodies]

    assert asyncio.run(scenario()) == [(101, 1001, 6)] * 16
    assert pools.executor.submitted >= 8


def test_a_growth_refused_during_initialization_is_a_memory_failure(pools: Pools) -> None:
    budget, shared = budget_of()
    runtime = pools.runtime(stateful_wat(), pool=FRESH, shared=shared,
                            limits={"memory": str(5 * PAGE)})  # 4 pages + 2 is over it
    failed = asyncio.run(failure(runtime))
    assert (type(failed), failed.reason) == (GuestFailure, "memory")
    assert budget.reserved == 0


def test_the_wasi_environment_is_the_functions_on_every_fresh_instance(pools: Pools) -> None:
    spec_env = {"GREETING": "hello", "EMPTY": "", "UTF8": "grüß"}
    runtime = pools.runtime(guests.env_probe_wat(), pool=FRESH, env=spec_env)

    async def scenario() -> list[bytes]:
        return [await body_of(runtime) for _ in range(3)]

    expected = b"".join(f"{k}={v}".encode() + b"\0" for k, v in spec_env.items())
    assert asyncio.run(scenario()) == [expected] * 3


def test_guest_output_of_initialization_and_request_is_logged_per_request(
    pools: Pools, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = pools.runtime(printing_wat(), pool=FRESH)

    async def scenario() -> None:
        for n in range(3):
            await runtime.invoke(http_request(request_id=f"r{n}"))

    with caplog.at_level(logging.INFO, logger="edge_runner.guest"):
        asyncio.run(scenario())
    logged = [(r.request_id, r.guest_output) for r in caplog.records  # type: ignore[attr-defined]
              if r.getMessage() == "guest output"]
    assert logged == [(f"r{n}", text) for n in range(3) for text in ("init", "handled")]


@pytest.mark.parametrize(("module", "limits", "error", "reason"), [
    (fuel_wat(), {"fuel": 200_000}, GuestTimeout, "fuel"),
    (guests.memory_bomb_wat(), {"memory": "1Mi"}, GuestFailure, "memory"),
    (guests.big_grow_wat(), {"memory": "1Mi"}, GuestFailure, "memory"),
    (trap_if_big_wat(), {}, GuestFailure, "trap"),
], ids=["fuel", "memory-bomb", "big-grow", "trap"])
def test_limits_hold_on_every_fresh_instance_and_a_failure_leaves_nothing_behind(
    pools: Pools, module: str, limits: dict[str, object], error: type[Exception], reason: str,
) -> None:
    budget, shared = budget_of()
    runtime = pools.runtime(module, pool=FRESH, limits=limits, shared=shared)
    big = http_request(body=b"x" * 10_000)

    async def scenario() -> None:
        for _ in range(3):
            failed = await failure(runtime, big)
            assert (type(failed), failed.reason) == (error, reason)
            assert budget.reserved == 0
        if reason in ("fuel", "trap"):  # these guests serve a small request afterwards
            assert await body_of(runtime) in (b"done", b"ok")

    asyncio.run(scenario())
    assert runtime.stats.cold_starts >= 3


def test_the_time_limit_stops_a_fresh_instance(pools: Pools) -> None:
    runtime = pools.runtime(guests.endless_wat(), pool=FRESH, limits={"timeout": "50ms"})
    runtime._demote(3600.0, "test: on a worker thread, under the function's own limit")
    failed = asyncio.run(failure(runtime))
    assert (type(failed), failed.reason) == (GuestTimeout, "timeout")


def test_a_hot_instance_reports_the_memory_it_grew_to(pools: Pools) -> None:
    grown = GUEST_MEMORY + 2 * MiB  # grown_wat adds 2 MiB to its 4 pages once
    budget, shared = budget_of()
    runtime = pools.runtime(guests.grown_wat(b"big", 2), shared=shared,
                            limits={"memory": "8Mi"}, pool={"reuse": True})

    async def scenario() -> None:
        assert await body_of(runtime) == b"big"
        assert budget.reserved == grown  # parked: what its memory holds after the call
        assert await body_of(runtime) == b"big"
        assert budget.reserved == grown

    asyncio.run(scenario())
    small = pools.runtime(guests.counter_wat(), name="small", shared=shared,
                          pool={"reuse": True})
    asyncio.run(body_of(small))
    assert budget.reserved == grown + GUEST_MEMORY
