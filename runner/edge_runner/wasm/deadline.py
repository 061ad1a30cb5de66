"""Time limits that never end a guest call early.

Used by :mod:`edge_runner.wasm.engine` (every store is armed) and the ABI
executors (each call sets its deadline).  The ticker
(:mod:`edge_runner.wasm.ticker`) advances the engine's epoch every tick, and a
call's epoch deadline, in ticks, is when wasmtime stops it.  Ticks can be late
and then catch up: the native timer's notification thread may wait for a CPU
on a busy machine, the Python ticker for the GIL.  A deadline set while the
epoch was behind the clock would then be reached early (measured: up to 8 ms
early for a 20 ms limit with the CPUs saturated).

So every store has wasmtime's epoch-deadline callback (:class:`DeadlineHook`), which
runs only when a deadline is reached (a call at its limit, a speculative call
at its cap: rare).  It compares the clock with the call's real deadline, kept
in a :class:`Deadline` the store's calls set: if that is still ahead, the call
continues with a new epoch deadline for the rest; if not, the callback ends it
with an error :func:`is_time_limit` recognizes, which the ABI executors treat
as wasmtime's epoch interrupt (a timeout, or a speculative call's time cap).
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from typing import Any

import wasmtime

from edge_runner.wasm import capi

log = logging.getLogger("edge_runner.wasm.deadline")

#: The message of the error that ends a call at its time limit.
TIME_LIMIT = "edge-runner: the call reached its time limit"
_CONTINUE = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
_MAX_DELTA = 2**40
_Callback: Any = capi.set_deadline_callback.argtypes[1]
_Finalizer: Any = capi.set_deadline_callback.argtypes[3]
_NO_FINALIZER = ctypes.cast(0, _Finalizer)


class Deadline:
    """When a store's current call must end, in ``time.monotonic()`` seconds (0 until
    set: a deadline reached before any was set ends the call at once)."""

    __slots__ = ("_cell",)

    def __init__(self) -> None:
        self._cell = ctypes.c_double(0.0)

    def set(self, until: float) -> None:
        self._cell.value = until

    @property
    def address(self) -> int:
        return ctypes.addressof(self._cell)


class DeadlineHook:
    """One engine's epoch-deadline callback: ``tick`` seconds per epoch."""

    def __init__(self, tick: float) -> None:
        self._tick = tick
        self._callback = _Callback(self._on_deadline)  # kept alive with the engine

    def arm(self, store: wasmtime.Store | capi.RawStore, deadline: Deadline) -> None:
        """Have ``store``'s epoch deadlines checked against ``deadline`` (which must live
        as long as the store)."""
        capi.set_deadline_callback(store.ptr(), self._callback, deadline.address,
                                  _NO_FINALIZER)

    def _on_deadline(self, _context: object, data: int | None, delta: Any, kind: Any) -> int:
        try:
            left = ctypes.c_double.from_address(data).value - time.monotonic() if data else 0.0
            if left > 0:
                delta[0] = min(_MAX_DELTA, max(1, math.ceil(left / self._tick)))
                kind[0] = _CONTINUE
                return 0
        except Exception:  # never let the call run on because of a bug here
            log.exception("epoch deadline callback failed; ending the call")
        error = capi.error_new(TIME_LIMIT.encode())
        return ctypes.cast(error, ctypes.c_void_p).value or 0


def is_time_limit(exc: BaseException) -> bool:
    """Whether ``exc`` is wasmtime's epoch interrupt or :class:`DeadlineHook`'s end of a
    call: either way, the call ran to its time limit."""
    if isinstance(exc, wasmtime.Trap):
        return exc.trap_code == wasmtime.TrapCode.INTERRUPT
    return isinstance(exc, wasmtime.WasmtimeError) and TIME_LIMIT in str(exc)
