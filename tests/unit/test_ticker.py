"""The epoch ticker (edge_runner.wasm.ticker): it ends spinning guests, and stops when closed.

A guest that loops forever is called with an epoch deadline of a few ticks and a
fuel budget far larger (about a second of spinning): with a working ticker the
call ends with wasmtime's interrupt trap long before the fuel runs out; with a
ticker that does not tick (closed), it ends by fuel.  Both tickers are tested:
the native timer (Linux) and the Python thread (the fallback).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import pytest
import wasmtime

from edge_runner.errors import GuestTimeout
from edge_runner.invoke.policy import InlinePolicy
from edge_runner.wasm.engine import WasmEngine
from edge_runner.wasm.ticker import ThreadTicker, Ticker, TimerTicker, start_ticker
from support import guests
from support.inprocess import Pools, RecordingExecutor, failure

TICK = 0.001
FUEL = 3_000_000_000  # seconds of spinning: a backstop, never the expected end
SPIN = '(module (func (export "spin") (loop br 0)))'

Make = Callable[[wasmtime.Engine, float], Ticker]
TICKERS: list[Make] = [ThreadTicker]
if sys.platform.startswith("linux"):
    TICKERS.append(TimerTicker)


def _engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = True
    return wasmtime.Engine(config)


def _spin(engine: wasmtime.Engine, ticks: int, fuel: int = FUEL) -> wasmtime.TrapCode | None:
    """Run the endless guest with a deadline of ``ticks``; the trap code that ended it."""
    store = wasmtime.Store(engine)
    store.set_fuel(fuel)
    store.set_epoch_deadline(ticks)
    spin = wasmtime.Instance(store, wasmtime.Module(engine, SPIN), []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)
    with pytest.raises(wasmtime.Trap) as trapped:
        spin(store)
    return trapped.value.trap_code


@pytest.mark.parametrize("make", TICKERS, ids=lambda make: make.__name__)
def test_a_spinning_guest_is_interrupted_by_the_epoch(make: Make) -> None:
    engine = _engine()
    ticker = make(engine, TICK)
    try:
        assert _spin(engine, ticks=3) == wasmtime.TrapCode.INTERRUPT
    finally:
        ticker.close()


@pytest.mark.parametrize("make", TICKERS, ids=lambda make: make.__name__)
def test_a_closed_ticker_no_longer_ticks(make: Make) -> None:
    engine = _engine()
    ticker = make(engine, TICK)
    ticker.close()
    ticker.close()  # idempotent
    # Without ticks the deadline is never reached: the (smaller) fuel ends the call.
    assert _spin(engine, ticks=3, fuel=50_000_000) == wasmtime.TrapCode.OUT_OF_FUEL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the native timer is Linux's")
def test_linux_gets_the_native_timer() -> None:
    ticker = start_ticker(_engine(), TICK)
    try:
        assert isinstance(ticker, TimerTicker)
    finally:
        ticker.close()


def test_an_engine_dropped_or_left_at_exit_with_its_timer_running_is_safe() -> None:
    """The timer calls into the engine from a C thread: it must be deleted before the
    engine is freed, whether the ticker is dropped unclosed or still runs at exit."""
    program = (
        "import gc, time\n"
        "from edge_runner.wasm.engine import WasmEngine\n"
        "for _ in range(20):\n"
        "    WasmEngine(tick=0.0005)\n"  # dropped, never closed
        "    gc.collect()\n"
        "time.sleep(0.01)\n"
        "kept = WasmEngine(tick=0.0005)\n"  # still ticking at interpreter exit
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"


NATIVE = pytest.mark.skipif(not sys.platform.startswith("linux"),
                            reason="the native timer is Linux's")


@NATIVE
def test_the_timer_rests_when_no_guest_ran_and_ticks_again_for_the_next() -> None:
    """An idle runner's timer stops (its thread per tick cost neighbours a quarter of
    their throughput); the next run's hold starts it before the guest runs."""
    engine = _engine()
    ticker = TimerTicker(engine, TICK)
    try:
        assert ticker.armed
        assert ticker.rest()  # nothing ran since it started
        assert not ticker.armed
        # Resting really stops the ticks: the deadline is never reached, fuel ends it.
        assert _spin(engine, ticks=3, fuel=50_000_000) == wasmtime.TrapCode.OUT_OF_FUEL
        ticker.hold()
        try:
            assert ticker.armed
            assert _spin(engine, ticks=3) == wasmtime.TrapCode.INTERRUPT
        finally:
            ticker.release()
        assert not ticker.rest()  # a run started since the last rest: keeps ticking
        assert ticker.armed
        assert ticker.rest()  # nothing since
        assert not ticker.rest()  # already resting
    finally:
        ticker.close()
    assert not ticker.rest()  # closed: nothing to rest


@NATIVE
def test_a_run_in_progress_keeps_the_timer_ticking() -> None:
    engine = _engine()
    ticker = TimerTicker(engine, TICK)
    try:
        ticker.hold()
        try:
            for _ in range(3):  # however many sweeps pass while it runs
                assert not ticker.rest()
            assert ticker.armed
            assert _spin(engine, ticks=3) == wasmtime.TrapCode.INTERRUPT
        finally:
            ticker.release()
    finally:
        ticker.close()


def test_after_the_engine_rested_a_call_still_ends_at_its_time_limit() -> None:
    """The pool holds the ticks for every run: an endless guest on a worker thread of an
    engine whose timer rested ends by its 100 ms time limit (504 timeout), not by its
    fuel, seconds of spinning later."""
    engine = WasmEngine()
    executor = RecordingExecutor()
    try:
        engine.rest_ticks()
        runtime = Pools(engine, executor).runtime(
            guests.endless_wat(), limits={"timeout": "100ms", "fuel": FUEL},
            inline=InlinePolicy(budget=0))
        error = asyncio.run(failure(runtime))
        assert (type(error), error.reason) == (GuestTimeout, "timeout")
        assert engine.rest_ticks() is False  # a run since the last rest
        if sys.platform.startswith("linux"):
            assert engine.rest_ticks() is True
    finally:
        executor.shutdown()
        engine.close()
