"""Fair sharing of worker threads between functions, and the quarantine (in process).

Against docs/scheduling.md, the docstrings of :class:`edge_runner.invoke.admission.FairGate`
and :mod:`edge_runner.invoke.lanes`: the order in which functions get a thread (turns
between functions, not requests; a call that held its thread long sits out turns; a
function at its cap leaves the other threads to others), and when a function is
quarantined, where its calls run then, and when it is released.  Nothing here is timed:
orders and counts only; call costs come from the test (:class:`support.inprocess.FakeCpu`)
where they matter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence

import pytest

from edge_runner.errors import GuestTimeout
from edge_runner.invoke.admission import FairGate, Gate, GateFull
from edge_runner.invoke.catalog import DesiredState
from edge_runner.invoke.lanes import QUARANTINE, SHARED, Conduct, QuarantinePolicy
from edge_runner.invoke.policy import InlinePolicy, QueuePolicy, SharedLimits
from edge_runner.invoke.pool import FunctionRuntime
from support import guests
from support.inprocess import (
    FakeCpu,
    LaneEvents,
    Pools,
    body_of,
    completion_order,
    failure,
    http_request,
    lanes,
    metric,
    new_catalog,
    source,
    trap_if_big_wat,
    wasm_engine,
    worker_threads,
)

#: Calls only on worker threads (no speculative inline run).
THREADS_ONLY = InlinePolicy(budget=0)
#: A body that makes :func:`trap_if_big_wat` trap.
BIG = b"x" * 2000


@pytest.fixture
def pools() -> Iterator[Pools]:
    """Runtimes of a fresh engine whose shared lane has one worker thread."""
    with wasm_engine() as engine, worker_threads(1) as executor:
        yield Pools(engine, executor)


@pytest.fixture
def cpu(pools: Pools) -> FakeCpu:
    fake = FakeCpu()
    pools.clock = fake
    return fake


# -- the gate alone ------------------------------------------------------------------------


async def grants(gate: Gate | FairGate, first: str, queued: Sequence[str],
                 cost: dict[str, float] | None = None) -> list[str]:
    """``first`` takes the only free slot; ``queued`` requests queue in this order; then
    each holder leaves at once, charged ``cost[name]``: who got the slot, in order."""
    assert gate.try_enter(name=first)
    order = [first]

    async def request(name: str) -> None:
        assert await gate.wait(timeout=30, name=name)
        order.append(name)

    tasks = [asyncio.ensure_future(request(name)) for name in queued]
    await asyncio.sleep(0)  # every request queued
    assert gate.waiting == len(queued)
    for _ in queued:
        holder = order[-1]
        gate.leave(name=holder, cost=(cost or {}).get(holder, 0.0))
        await asyncio.sleep(0)  # the request handed the slot runs
    await asyncio.gather(*tasks)
    gate.leave(name=order[-1], cost=0.0)
    assert (gate.free, gate.waiting) == (gate.capacity, 0)
    return order


def test_one_slot_goes_to_functions_in_turn_not_to_requests_in_order() -> None:
    flood = ["A"] * 5 + ["B"] * 3  # A queued all of its requests first
    assert asyncio.run(grants(FairGate(1, 64), "A", flood)) == list("ABABABAAA")
    # The FIFO gate (a function's own) serves requests in order: A's block first.
    assert asyncio.run(grants(Gate(1, 64), "A", flood)) == list("AAAAAABBB")


def test_a_function_that_never_had_a_turn_goes_before_those_that_did() -> None:
    # A was served (without queueing) and queued first; B and C, never served, go first.
    order = asyncio.run(grants(FairGate(1, 64), "A", ["A", "A", "B", "B", "C"]))
    assert order == list("ABCABA")


def test_a_call_that_held_its_slot_long_sits_out_turns_and_the_slot_is_never_idle() -> None:
    # Quantum 1: each of A's calls held its slot 5, B's nothing.  After A's first call
    # B takes 6 turns (A repays 1 a turn, and is due when back above 0); once B has no
    # more requests, A is served at once whatever it owes.
    order = asyncio.run(grants(FairGate(1, 64, quantum=1.0), "A", ["A"] * 3 + ["B"] * 8,
                               cost={"A": 5.0}))
    assert order == list("ABBBBBBABBAA")


def test_a_function_at_its_cap_leaves_the_other_slots_to_others() -> None:
    async def scenario() -> None:
        gate = FairGate(2, 64, cap=1)
        assert gate.try_enter(name="A")
        assert not gate.try_enter(name="A")  # a slot is free, but A holds its share
        second = asyncio.ensure_future(gate.wait(timeout=30, name="A"))
        await asyncio.sleep(0)
        assert (gate.free, gate.queued("A")) == (1, 1)
        assert await gate.wait(timeout=30, name="B")  # B gets it though A queued first
        assert (gate.free, gate.holding("A"), gate.holding("B")) == (0, 1, 1)
        gate.leave(name="A", cost=0.0)  # A's queued request gets A's slot back
        assert await second
        assert (gate.holding("A"), gate.queued("A")) == (1, 0)

    asyncio.run(scenario())
    assert FairGate.sized(1, 8, share=0.5).cap == 1  # never below one
    assert FairGate.sized(4, 8, share=0.5).cap == 2
    assert FairGate.sized(3, 8, share=0.5).cap == 2  # rounded up


def test_the_queue_is_bounded_and_expired_or_cancelled_requests_leave_it() -> None:
    async def scenario() -> None:
        gate = FairGate(1, 2)
        assert gate.try_enter(name="A")
        late = asyncio.ensure_future(gate.wait(timeout=0, name="B"))
        kept = asyncio.ensure_future(gate.wait(timeout=30, name="C"))
        await asyncio.sleep(0)
        with pytest.raises(GateFull):
            await gate.wait(timeout=30, name="D")
        assert await late is False  # expired: out of the queue and the ring
        assert (gate.waiting, gate.queued("B")) == (1, 0)
        gate.leave(name="A", cost=0.0)  # handed to C, not freed
        assert await kept is True and gate.free == 0
        cancelled = asyncio.ensure_future(gate.wait(timeout=30, name="E"))
        await asyncio.sleep(0)
        gate.leave(name="C", cost=0.0)  # handed to E, which is cancelled before it runs
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert (gate.free, gate.waiting) == (1, 0)  # the slot came back

    asyncio.run(scenario())


# -- functions sharing worker threads ------------------------------------------------------


@pytest.mark.parametrize(("threads", "expected"), [
    (FairGate(1, 64), list("ABABABAAA")),
    (Gate(1, 64), list("AAAAAABBB")),
], ids=["fair", "fifo"])
def test_with_one_worker_another_function_is_served_between_a_flooding_functions_requests(
    pools: Pools, cpu: FakeCpu, threads: Gate | FairGate, expected: list[str],
) -> None:
    # A floods the only worker thread with six requests, B (WAGI) sends three right after.
    # Every call costs nothing on the test's clock: the order is the turns alone.
    shared = SharedLimits.unbounded()
    shared = SharedLimits(budget=shared.budget, threads=threads)
    flood = pools.runtime(guests.constant_wat(b"a"), name="A", inline=THREADS_ONLY,
                          shared=shared)
    wagi = pools.runtime(guests.wagi_wat(guests.wagi_ok_body()), name="B", abi="wagi",
                         shared=shared)
    calls = [("A", lambda: body_of(flood))] * 6 + [("B", lambda: body_of(wagi))] * 3
    assert asyncio.run(completion_order(calls)) == expected
    assert pools.executor.submitted == 9


def test_failing_calls_move_a_function_to_the_quarantine_lane(pools: Pools) -> None:
    events, healthy_events = LaneEvents(), LaneEvents()
    with lanes() as (shared, quarantine):
        trap = pools.runtime(guests.trap_wat(), name="trap", shared=shared, events=events)
        healthy = pools.runtime(guests.wagi_wat(guests.wagi_ok_body()), name="wagi",
                                abi="wagi", shared=shared, events=healthy_events)

        async def scenario() -> None:
            for _ in range(3):  # inline (then demoted), then twice on a shared thread
                assert (await failure(trap)).reason == "trap"
            assert trap.quarantined and events.quarantines == [True]
            assert (pools.executor.submitted, quarantine.submitted) == (2, 0)
            assert (await failure(trap)).reason == "trap"  # still its documented answer
            assert (pools.executor.submitted, quarantine.submitted) == (2, 1)
            assert await body_of(healthy) == b"ok"  # others stay on the shared lane
            assert (pools.executor.submitted, quarantine.submitted) == (3, 1)

        asyncio.run(scenario())
    assert events.lanes() == [SHARED, SHARED, QUARANTINE]
    assert healthy_events.lanes() == [SHARED] and healthy_events.quarantines == []
    pool = trap.describe()
    assert (pool["quarantined"], pool["inline"]) == (True, False)
    assert trap.stats.quarantines == 1


def test_a_quarantined_function_that_behaves_again_is_released(pools: Pools) -> None:
    events = LaneEvents()
    with lanes() as (shared, quarantine):
        runtime = pools.runtime(trap_if_big_wat(), shared=shared, events=events,
                                inline=THREADS_ONLY)

        async def scenario() -> None:
            for _ in range(3):
                assert (await failure(runtime, http_request(body=BIG))).reason == "trap"
            assert runtime.quarantined
            for _ in range(3):  # one strike off per good call: released at zero
                assert await body_of(runtime) == b"ok"
            assert not runtime.quarantined
            assert await body_of(runtime) == b"ok"

        asyncio.run(scenario())
    assert events.quarantines == [True, False]
    assert events.lanes() == [SHARED] * 3 + [QUARANTINE] * 3 + [SHARED]
    assert quarantine.submitted == 3


def test_calls_computing_long_are_strikes_by_their_cpu_time(pools: Pools, cpu: FakeCpu) -> None:
    events = LaneEvents()
    with lanes() as (shared, _):
        runtime = pools.runtime(guests.constant_wat(b"ok"), shared=shared, events=events,
                                inline=THREADS_ONLY)

        async def scenario() -> None:
            cpu.cpu_step = 0.05  # 2.5 x heavy_call: 2.5 strikes, although it succeeds
            await body_of(runtime)
            assert not runtime.quarantined
            await body_of(runtime)
            assert runtime.quarantined  # 5 >= 3
            cpu.cpu_step = 0.001
            for _ in range(4):
                await body_of(runtime)
            assert runtime.quarantined  # 5 - 4
            await body_of(runtime)
            assert not runtime.quarantined

        asyncio.run(scenario())
    assert events.quarantines == [True, False]


def test_a_quarantined_request_waits_for_a_thread_at_most_its_time_limit(
    pools: Pools,
) -> None:
    with lanes() as (shared, _):
        runtime = pools.runtime(guests.trap_wat(), shared=shared, limits={"timeout": "50ms"},
                                queue=QueuePolicy(max_wait=30.0))
        assert shared.quarantine is not None

        async def scenario() -> GuestTimeout:
            for _ in range(3):
                await failure(runtime)
            assert runtime.quarantined
            assert shared.quarantine is not None
            assert shared.quarantine.gate.try_enter(name="other")  # its only thread is busy
            error = await failure(runtime)
            assert isinstance(error, GuestTimeout)
            return error

        error = asyncio.run(scenario())
    # 504, as if it ran past its limit, not 503 after max_wait; the guest never started.
    assert (error.reason, error.guest_started) == ("timeout", False)
    assert "quarantined" in error.detail


def test_without_a_quarantine_lane_no_function_is_quarantined(pools: Pools) -> None:
    events = LaneEvents()
    shared = SharedLimits(budget=SharedLimits.unbounded().budget, threads=FairGate(1, 64))
    runtime = pools.runtime(guests.trap_wat(), shared=shared, events=events)

    async def scenario() -> None:
        for _ in range(6):
            await failure(runtime)

    asyncio.run(scenario())
    assert not runtime.quarantined and events.quarantines == []
    assert events.lanes() == [SHARED] * 5


def test_repeat_offenders_must_behave_longer_and_strikes_zero_means_never() -> None:
    conduct = Conduct(QuarantinePolicy(strikes=3, heavy_call=0.02))
    assert [conduct.failed(0.0) for _ in range(3)] == [None, None, "quarantined"]
    assert conduct.failed(0.1) is None and conduct.strikes == 6  # capped at 2 x strikes
    released = [conduct.served(0.0) for _ in range(6)]
    assert released[-1] == "released" and released[:-1] == [None] * 5
    for _ in range(3):
        conduct.failed(0.0)
    assert (conduct.quarantined, conduct.times) == (True, 2)
    # The second time it starts at twice the cap: 12 good calls to be released.
    calls = 0
    while conduct.quarantined:
        conduct.served(0.0)
        calls += 1
    assert calls == 12
    lenient = Conduct(QuarantinePolicy(strikes=0))
    assert all(lenient.failed(1.0) is None for _ in range(10)) and not lenient.quarantined


def test_metrics_show_waits_by_function_and_lane_and_who_is_quarantined(pools: Pools) -> None:
    functions = [source("trap", guests.trap_wat()),
                 source("wagi", guests.wagi_wat(guests.wagi_ok_body()), abi="wagi")]
    with lanes() as (shared, _):
        async def scenario() -> dict[str, object]:
            catalog = new_catalog(pools.engine, pools.executor, shared=shared)
            await catalog.apply(DesiredState(functions))
            trap, wagi = (catalog.snapshot.functions[n] for n in ("trap", "wagi"))
            try:
                for _ in range(4):
                    await failure(trap)
                for _ in range(2):
                    await body_of(wagi)

                def count(function: str, lane: str) -> float:
                    return metric(catalog, "edge_worker_wait_seconds_count",
                                  function=function, lane=lane)

                return {
                    "waits": [count("trap", SHARED), count("trap", QUARANTINE),
                              count("wagi", SHARED), count("wagi", QUARANTINE)],
                    "quarantined": [metric(catalog, "edge_function_quarantined", function=n)
                                    for n in ("trap", "wagi")],
                    "entered": metric(catalog, "edge_quarantines_total", function="trap"),
                    "listed": [r.describe()["quarantined"] for r in (trap, wagi)],
                }
            finally:
                for runtime in (trap, wagi):
                    runtime.close()

        found = asyncio.run(scenario())
    # trap: inline, 2 on the shared lane, then quarantined: 1 on its lane.
    assert found == {"waits": [2, 1, 2, 0], "quarantined": [1, 0], "entered": 1,
                     "listed": [True, False]}


def test_quarantined_runtimes_are_judged_per_version(pools: Pools) -> None:
    # A new version of a function (a new runtime) starts with a clean record.
    with lanes() as (shared, _):
        old = pools.runtime(guests.trap_wat(), name="f", shared=shared)

        async def scenario() -> FunctionRuntime:
            for _ in range(3):
                await failure(old)
            return pools.runtime(guests.constant_wat(b"ok"), name="f", shared=shared)

        new = asyncio.run(scenario())
    assert old.quarantined and not new.quarantined
