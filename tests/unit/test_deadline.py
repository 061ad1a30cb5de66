"""Time limits never end a call early (edge_runner.wasm.deadline), whatever the ticks do.

Epoch ticks can be late and then come in a burst (a notification thread waiting
for a CPU, the Python ticker for the GIL).  Here a burst of a thousand ticks is
made on purpose while a guest spins under a 100 ms limit: without the store's
deadline callback the burst would end the call at once; with it, the call runs
until its limit really passed, then ends as a time limit.
"""

from __future__ import annotations

import threading
import time

import pytest
import wasmtime

from edge_runner.wasm.deadline import is_time_limit
from edge_runner.wasm.engine import WasmEngine

SPIN = '(module (func (export "spin") (loop br 0)))'
LIMIT = 0.1
#: Scheduling slack on an idle machine (as tests/unit/test_time_bounds.py).
MARGIN = 0.25


def _spin_under_limit(engine: WasmEngine, burst_after: float | None) -> tuple[float, Exception]:
    store = wasmtime.Store(engine.engine)
    store.set_fuel(2**62)
    spin = wasmtime.Instance(store, wasmtime.Module(engine.engine, SPIN), []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)
    if burst_after is not None:
        def burst() -> None:
            for _ in range(1000):
                engine.engine.increment_epoch()
        threading.Timer(burst_after, burst).start()
    engine.limit_time(store, LIMIT)
    started = time.monotonic()
    with pytest.raises((wasmtime.Trap, wasmtime.WasmtimeError)) as ended:
        spin(store)
    return time.monotonic() - started, ended.value


@pytest.mark.parametrize("burst_after", [None, 0.01, 0.09], ids=["no-burst", "early", "late"])
def test_a_burst_of_ticks_does_not_end_a_call_before_its_limit(burst_after: float | None
                                                                ) -> None:
    engine = WasmEngine()
    try:
        elapsed, error = _spin_under_limit(engine, burst_after)
    finally:
        engine.close()
    assert is_time_limit(error), error
    assert LIMIT <= elapsed <= LIMIT + MARGIN, elapsed


def test_other_errors_are_not_time_limits() -> None:
    assert not is_time_limit(wasmtime.WasmtimeError("some other failure"))
    assert not is_time_limit(ValueError("the time limit"))
