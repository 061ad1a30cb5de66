"""FunctionRuntime (edge_runner.invoke.pool) in process, with a real engine and real guests.

Against the pool's docstrings, docs/abi.md "Instances and reuse" and docs/http.md (503
``concurrency``, ``memory-budget``).  The inline policy is judged on a
:class:`support.inprocess.FakeClock`, so no test depends on how fast this machine is;
only the gate tests measure real time, against ``max_wait``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from edge_runner.errors import GuestFailure, GuestTimeout, InvocationError, Unavailable
from edge_runner.invoke.admission import Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.policy import InlinePolicy, QueuePolicy, SharedLimits
from edge_runner.invoke.pool import FunctionRuntime
from support import guests
from support.inprocess import (
    GUEST_MEMORY,
    FakeClock,
    MiB,
    Pools,
    RecordingEvents,
    body_of,
    budget_of,
    count_of,
    counts,
    failure,
    fuel_wat,
    http_request,
)

#: A body that makes :func:`fuel_wat` need millions of fuel; without it, thousands.
BIG = b"x" * 10_000
FUEL_BUDGET = 200_000
#: Scheduling slack allowed on top of a contractual wait (the event loop is idle).
MARGIN = 0.25


@pytest.fixture
def clock(pools: Pools) -> FakeClock:
    fake = FakeClock()
    pools.clock = fake
    return fake


async def backoffs(
    clock: FakeClock, runtime: FunctionRuntime, call: Callable[[], Awaitable[object]], times: int
) -> list[float]:
    """How long each of ``times`` calls in a row moved the function to threads for (each
    backoff waited out on ``clock`` before the next call)."""
    found = []
    for _ in range(times):
        started = clock.now
        await call()
        found.append(runtime._inline_after - started)
        clock.now = runtime._inline_after
    return found


@pytest.mark.parametrize(("reuse", "max_requests", "expected", "cold", "evicted"), [
    (True, 0, [1, 2, 3, 4, 5], 1, {}),
    (False, 0, [1, 1, 1, 1, 1], 1, {}),  # one instance, renewed after each request
    (True, 2, [1, 2, 1, 2, 1], 3, {"recycle": 2}),  # --instance-max-requests 2
], ids=["reuse", "fresh", "recycle"])
def test_pool_reuse_decides_whether_globals_persist(  # noqa: PLR0917
    pools: Pools, reuse: bool, max_requests: int, expected: list[int], cold: int,
    evicted: dict[str, int],
) -> None:
    events = RecordingEvents()
    runtime = pools.runtime(guests.counter_wat(), pool={"reuse": reuse}, events=events,
                            max_requests=max_requests)
    assert asyncio.run(counts(runtime, 5)) == expected
    pool = runtime.describe()
    assert (pool["coldStarts"], pool["served"], pool["idle"], pool["reuse"]) == (
        cold, 5, 1, reuse)
    assert pool["renewed"] == (0 if reuse else 5)
    assert len(events.cold_starts) == cold and None not in events.cold_starts  # edge: timed
    assert events.evictions == evicted
    assert pools.executor.submitted == 0  # small edge calls ran inline, on the loop


def test_a_call_over_the_inline_fuel_budget_is_rerun_on_a_thread_and_demoted_for_backoff(
    pools: Pools, clock: FakeClock
) -> None:
    events = RecordingEvents()
    budget, shared = budget_of()
    runtime = pools.runtime(fuel_wat(), events=events, shared=shared,
                            inline=InlinePolicy(budget=FUEL_BUDGET, backoff=30.0))

    async def scenario() -> None:
        assert runtime.describe()["inline"] is True
        assert await body_of(runtime, http_request(body=BIG)) == b"done"
        assert pools.executor.submitted == 1  # re-run on a worker thread
        assert events.evictions == {"preempted": 1}  # not a failure
        assert len(events.cold_starts) == 2  # the preempted instance, then the thread's
        assert budget.reserved == GUEST_MEMORY  # only the parked thread instance's memory
        pool = runtime.describe()
        assert (pool["inline"], pool["demotions"], pool["discarded"]) == (False, 1, 0)
        until = runtime._inline_after
        assert until == clock.now + 30.0

        clock.now = until - 0.001  # still demoted: even a small call goes to a thread
        assert await body_of(runtime) == b"done"
        assert pools.executor.submitted == 2
        assert runtime.describe()["coldStarts"] == 2  # on the parked thread instance

        clock.now = until  # backoff over: inline again
        assert runtime.describe()["inline"] is True
        assert await body_of(runtime) == b"done"
        assert pools.executor.submitted == 2

    asyncio.run(scenario())


def test_repeat_demotions_double_up_to_32x_and_one_fast_inline_call_forgives(
    pools: Pools, clock: FakeClock
) -> None:
    runtime = pools.runtime(fuel_wat(), inline=InlinePolicy(budget=FUEL_BUDGET, backoff=1.0))

    async def big() -> bytes:
        return await body_of(runtime, http_request(body=BIG))

    async def scenario() -> None:
        assert await backoffs(clock, runtime, big, 7) == [1, 2, 4, 8, 16, 32, 32]
        assert await body_of(runtime) == b"done"  # fast, inline
        assert await backoffs(clock, runtime, big, 1) == [1]

    asyncio.run(scenario())
    assert runtime.describe()["demotions"] == 8


def test_a_failing_inline_call_demotes_for_failure_backoff(
    pools: Pools, clock: FakeClock
) -> None:
    events = RecordingEvents()
    budget, shared = budget_of()
    runtime = pools.runtime(guests.trap_wat(), events=events, shared=shared,
                            inline=InlinePolicy(failure_backoff=5.0, backoff=30.0))

    async def scenario() -> None:
        assert (await failure(runtime)).reason == "trap"
        assert pools.executor.submitted == 0  # it failed on the loop
        assert (runtime.describe()["inline"], runtime.describe()["demotions"]) == (False, 1)
        until = runtime._inline_after
        assert until == clock.now + 5.0

        clock.now = until - 1.0
        assert (await failure(runtime)).reason == "trap"
        assert pools.executor.submitted == 1
        assert runtime._inline_after == until  # failing while demoted does not extend it
        assert runtime.describe()["demotions"] == 1

    asyncio.run(scenario())
    assert events.evictions == {"failure": 2}
    assert runtime.describe()["discarded"] == 2
    assert budget.reserved == 0


def test_a_function_failing_again_after_its_backoff_waits_twice_as_long(
    pools: Pools, clock: FakeClock
) -> None:
    runtime = pools.runtime(guests.trap_wat(), inline=InlinePolicy(failure_backoff=5.0))
    assert asyncio.run(backoffs(clock, runtime, lambda: failure(runtime), 3)) == [5, 10, 20]


def test_slow_inline_calls_demote_after_a_streak_that_one_fast_call_breaks(
    pools: Pools, clock: FakeClock
) -> None:
    runtime = pools.runtime(guests.counter_wat(), inline=InlinePolicy(
        slow_call=0.005, slow_calls=3, slow_backoff=5.0))

    async def call(took: float) -> None:
        clock.step = took  # every interval the pool measures lasts `took`
        await body_of(runtime)
        clock.step = 0.0

    async def scenario() -> None:
        for took in (0.01, 0.01, 0.001, 0.01, 0.01):  # the fast third call breaks the streak
            await call(took)
        assert (runtime.describe()["inline"], runtime.describe()["demotions"]) == (True, 0)
        await call(0.01)  # three slow ones in a row
        assert (runtime.describe()["inline"], runtime.describe()["demotions"]) == (False, 1)
        assert 5.0 - 0.1 < runtime._inline_after - clock.now <= 5.0

    asyncio.run(scenario())
    assert pools.executor.submitted == 0  # all six ran inline


def test_a_call_stopped_by_the_inline_time_cap_is_rerun_on_a_thread(pools: Pools) -> None:
    # Spins 200 ms on the WASI clock: little fuel, far past the 10 ms inline time cap.
    events = RecordingEvents()
    runtime = pools.runtime(guests.busy_wat(200), limits={"timeout": "5s"}, events=events,
                            inline=InlinePolicy(budget=10**12, max_stall=0.01))
    assert asyncio.run(body_of(runtime)) == b"done"
    assert pools.executor.submitted == 1
    assert events.evictions == {"preempted": 1}


def test_a_full_function_gate_queues_then_answers_concurrency_after_max_wait(
    pools: Pools,
) -> None:
    max_wait = 0.2
    runtime = pools.runtime(guests.busy_wat(600), limits={"timeout": "5s"},
                            pool={"maxInstances": 1}, inline=InlinePolicy(budget=0),
                            queue=QueuePolicy(max_waiting=1, max_wait=max_wait))

    async def scenario() -> None:
        first = asyncio.ensure_future(body_of(runtime))
        await asyncio.sleep(0)  # it takes the only slot and goes to a thread
        assert (runtime.describe()["busy"], runtime.describe()["waiting"]) == (1, 0)
        started = time.monotonic()
        second = asyncio.ensure_future(failure(runtime))
        await asyncio.sleep(0)
        assert runtime.describe()["waiting"] == 1

        full = await failure(runtime)  # the queue (1) is full: refused at once
        assert isinstance(full, Unavailable)
        assert (full.reason, full.retry_after) == ("concurrency", 1)
        assert time.monotonic() - started < max_wait

        late = await second
        waited = time.monotonic() - started
        assert (type(late), late.reason, late.guest_started) == (Unavailable, "concurrency", False)
        assert max_wait - 1e-3 <= waited <= max_wait + MARGIN
        assert not first.done()  # the slot was busy all along
        assert await first == b"done"

    asyncio.run(scenario())
    pool = runtime.describe()
    assert (pool["busy"], pool["waiting"], pool["coldStarts"], pool["served"]) == (0, 0, 1, 1)


def test_a_freed_slot_goes_to_the_queued_request(pools: Pools) -> None:
    runtime = pools.runtime(guests.busy_wat(100), pool={"maxInstances": 1},
                            inline=InlinePolicy(budget=0), queue=QueuePolicy(max_wait=30.0))

    async def scenario() -> list[bytes]:
        return list(await asyncio.gather(body_of(runtime), body_of(runtime)))

    assert asyncio.run(scenario()) == [b"done", b"done"]
    # Never two at once, so one instance served both.
    assert (runtime.describe()["coldStarts"], runtime.describe()["served"]) == (1, 2)


def test_the_function_and_runner_wide_gates_share_one_max_wait(pools: Pools) -> None:
    max_wait, later = 0.6, 0.2
    threads = Gate(1, 8)
    assert threads.try_enter()  # the runner's only worker thread is busy elsewhere
    runtime = pools.runtime(
        guests.counter_wat(), pool={"maxInstances": 1}, inline=InlinePolicy(budget=0),
        queue=QueuePolicy(max_wait=max_wait),
        shared=SharedLimits(budget=MemoryBudget.unlimited(), threads=threads),
    )

    async def timed() -> tuple[InvocationError, float]:
        started = time.monotonic()
        return await failure(runtime), time.monotonic() - started

    async def scenario() -> list[tuple[InvocationError, float]]:
        first = asyncio.ensure_future(timed())  # holds the function's slot, waits for a thread
        await asyncio.sleep(later)  # the second request arrives later
        second = asyncio.ensure_future(timed())
        return [await first, await second]

    # The second waits for the function's slot until the first gives up (max_wait -
    # later), then only what is left of max_wait for a thread: max_wait in all.
    for error, elapsed in asyncio.run(scenario()):
        assert (type(error), error.reason) == (Unavailable, "concurrency")
        assert max_wait - 1e-3 <= elapsed <= max_wait + MARGIN
    assert (threads.busy, threads.waiting, pools.executor.submitted) == (1, 0, 0)


@pytest.mark.parametrize(("module", "limits", "error", "reason"), [
    (guests.trap_wat(), {}, GuestFailure, "trap"),
    (guests.init_trap_wat(), {}, GuestFailure, "instantiate"),
    (guests.endless_wat(), {"fuel": 100_000}, GuestTimeout, "fuel"),
    (guests.memory_bomb_wat(), {"memory": "1Mi"}, GuestFailure, "memory"),
], ids=["trap", "init-trap", "fuel", "memory"])
def test_memory_reservations_are_released_after_failures(
    pools: Pools, module: str, limits: dict[str, object], error: type[InvocationError],
    reason: str,
) -> None:
    budget, shared = budget_of()
    events = RecordingEvents()
    runtime = pools.runtime(module, limits=limits, shared=shared, events=events)

    async def scenario() -> None:
        for submitted in (0, 1):  # inline, then on a thread (demoted by the failure)
            failed = await failure(runtime)
            assert (type(failed), failed.reason) == (error, reason)
            assert pools.executor.submitted == submitted
            assert budget.reserved == 0

    asyncio.run(scenario())
    # An instance that never came to exist is not evicted.
    assert events.evictions == ({} if reason == "instantiate" else {"failure": 2})
    assert budget.refusals == 0


def test_a_new_instance_evicts_idle_ones_for_room_or_gets_memory_budget(pools: Pools) -> None:
    # Room for one running 16 MiB instance and less than one idle guest (256 KiB) more.
    budget, shared = budget_of(16 * MiB + GUEST_MEMORY // 2)
    first, second, big = (pools.runtime(guests.counter_wat(), name=name, shared=shared,
                                        limits={"memory": memory})
                          for name, memory in (("a", "16Mi"), ("b", "16Mi"), ("big", "32Mi")))

    async def scenario() -> None:
        assert count_of(await body_of(first)) == 1
        assert budget.reserved == GUEST_MEMORY  # idle: only what its memory holds
        assert count_of(await body_of(second)) == 1  # evicted first's idle instance
        assert (first.describe()["idle"], first.describe()["evicted"]) == (0, 1)
        assert budget.reserved == GUEST_MEMORY
        refused = await failure(big)
        assert isinstance(refused, Unavailable)
        assert (refused.reason, refused.retry_after) == ("memory_budget", 1)

    asyncio.run(scenario())
    assert second.describe()["idle"] == 0  # evicted trying to make room, in vain
    assert (budget.reserved, budget.refusals) == (0, 1)
    assert big.describe()["coldStarts"] == 0


def test_idle_instances_expire_after_idle_timeout_or_for_the_budget(
    pools: Pools, clock: FakeClock
) -> None:
    events = RecordingEvents()
    budget, shared = budget_of()
    runtime = pools.runtime(guests.counter_wat(), pool={"idleTimeout": "60s"}, events=events,
                            shared=shared)
    clock.now = 1000.0
    assert asyncio.run(counts(runtime, 1)) == [1]
    assert (runtime.expire_idle(1059.5), runtime.describe()["idle"]) == (0, 1)
    assert (runtime.expire_idle(1060.5), runtime.describe()["idle"]) == (1, 0)
    assert events.evictions == {"idle": 1}
    assert budget.reserved == 0
    assert asyncio.run(counts(runtime, 1)) == [1]  # a fresh instance
    assert runtime.describe()["coldStarts"] == 2
    assert runtime.evict_idle() is True  # what the budget calls when it needs room
    assert runtime.evict_idle() is False  # nothing left
    assert (runtime.describe()["idle"], runtime.describe()["evicted"]) == (0, 1)
    assert events.evictions == {"idle": 1, "budget": 1}
    assert budget.reserved == 0


def test_close_drops_idle_instances_and_keeps_none_of_the_calls_in_flight(
    pools: Pools,
) -> None:
    budget, shared = budget_of()
    runtime = pools.runtime(guests.busy_wat(50), shared=shared, inline=InlinePolicy(budget=0))

    async def scenario() -> None:
        assert await body_of(runtime) == b"done"
        in_flight = asyncio.ensure_future(body_of(runtime))
        await asyncio.sleep(0)  # on its worker thread now
        assert runtime.describe()["busy"] == 1
        runtime.close()
        assert runtime.describe()["idle"] == 0
        assert await in_flight == b"done"  # finishes on its instance ...
        assert runtime.describe()["idle"] == 0  # ... which is not kept
        assert await body_of(runtime) == b"done"  # a late request still gets an answer
        assert runtime.describe()["idle"] == 0

    asyncio.run(scenario())
    assert runtime.closed
    assert runtime not in budget._pools
    assert budget.reserved == 0


def test_wagi_runs_on_threads_with_a_cold_start_per_request(
    pools: Pools, wagi_wasm: Path
) -> None:
    events = RecordingEvents()
    budget, shared = budget_of()
    runtime = pools.runtime(wagi_wasm.read_bytes(), name="wagi", abi="wagi", events=events,
                            shared=shared, pool={"reuse": True})  # ignored by wagi

    async def scenario() -> None:
        for _ in range(3):
            status, headers, body = await runtime.invoke(
                http_request("/wagi/x", query=b"name=edge"))
            assert (status, headers) == (200, [(b"content-type", b"text/plain; charset=utf-8")])
            assert body.startswith(b"Hello, edge!\nmethod: GET\npath: /wagi/x\nquery: name=edge\n")

    asyncio.run(scenario())
    assert pools.executor.submitted == 3  # never inline, whatever the inline budget
    pool = runtime.describe()
    assert (pool["coldStarts"], pool["served"], pool["idle"], pool["demotions"]) == (3, 3, 0, 0)
    assert events.cold_starts == [None, None, None]  # counted, not timed
    assert budget.reserved == 0


def test_a_failing_wagi_request_is_no_failure_eviction(pools: Pools) -> None:
    events = RecordingEvents()
    budget, shared = budget_of()
    runtime = pools.runtime(guests.wagi_wat("(call $exit (i32.const 3))"), abi="wagi",
                            events=events, shared=shared)

    async def scenario() -> list[tuple[type[InvocationError], str]]:
        return [(type(e), e.reason) for e in [await failure(runtime) for _ in range(2)]]

    assert asyncio.run(scenario()) == [(GuestFailure, "exit")] * 2
    assert events.evictions == {}  # a per-request instance is not evicted by failing
    pool = runtime.describe()
    assert (pool["discarded"], pool["demotions"], pool["coldStarts"]) == (0, 0, 2)
    assert pools.executor.submitted == 2
    assert budget.reserved == 0
