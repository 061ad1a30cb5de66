"""The engine's epoch ticker: what ends a guest call at its time limit.

Used by :mod:`edge_runner.wasm.engine`.  Every ``tick`` seconds the engine's
epoch advances by one; each call sets a deadline a number of ticks ahead
(``WasmEngine.deadline_ticks``), and wasmtime stops the guest when the epoch
reaches it.

On Linux the ticks come from a POSIX timer (``timer_create`` with
``SIGEV_THREAD``) whose notification function is wasmtime's own
``wasmtime_engine_increment_epoch``, called with the engine: the C library
runs it on a thread of its own, and no Python code runs per tick.  A ticker
thread in Python needs the GIL 200 times a second, and it takes it from the
event loop in the middle of a request (at the loop's next ctypes call, which
then waits to get it back): measured at 15 us per request, a fifth of a hot
request's cost (``bench/throughput.py``).  Where the timer is not available
(macOS, a C library without ``timer_create``), :class:`ThreadTicker` does it
in Python, catching up when it was late.

Ticks can be late (a notification thread waiting for a CPU, the Python thread
for the GIL) and then come in a burst; :mod:`edge_runner.wasm.deadline` keeps
such a burst from ending a call before its time limit really passed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
import threading
import time
import weakref
from typing import Protocol

import wasmtime

from edge_runner.wasm import capi

log = logging.getLogger("edge_runner.wasm.ticker")

_CLOCK_MONOTONIC = 1
_SIGEV_THREAD = 2


class Ticker(Protocol):
    """Advances an engine's epoch every ``tick`` seconds until closed."""

    def close(self) -> None:
        """Stop ticking; the engine may be freed afterwards."""
        ...  # pragma: no cover - protocol


class _Sigevent(ctypes.Structure):
    """``struct sigevent`` (glibc and musl, 64-bit Linux) with the SIGEV_THREAD fields."""

    _fields_ = [
        ("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
        ("function", ctypes.c_void_p), ("attributes", ctypes.c_void_p),
        ("_pad", ctypes.c_byte * 32),
    ]


class _Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("interval", _Timespec), ("value", _Timespec)]


def _libc() -> ctypes.CDLL | None:
    """The C library with ``timer_create`` (in libc since glibc 2.34, librt before)."""
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    for name in (None, ctypes.util.find_library("rt")):
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
        if hasattr(lib, "timer_create"):
            return lib
    return None


class TimerTicker:
    """Ticks from a POSIX timer calling ``wasmtime_engine_increment_epoch`` (see the
    module docstring); raises OSError if the timer cannot be created."""

    def __init__(self, engine: wasmtime.Engine, tick: float) -> None:
        libc = _libc()
        if libc is None:
            raise OSError("timer_create is not available")
        event = _Sigevent(
            value=ctypes.cast(engine.ptr(), ctypes.c_void_p).value, notify=_SIGEV_THREAD,
            function=capi.increment_epoch,
        )
        timer = ctypes.c_void_p()
        if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)):
            raise OSError(ctypes.get_errno(), "timer_create failed")
        seconds, fraction = divmod(tick, 1.0)
        period = _Timespec(int(seconds), round(fraction * 1e9))
        if libc.timer_settime(timer, 0, ctypes.byref(_Itimerspec(period, period)), None):
            errno = ctypes.get_errno()
            libc.timer_delete(timer)
            raise OSError(errno, "timer_settime failed")
        # The timer calls into the engine: it is deleted before the engine can be freed,
        # whether this ticker is closed, dropped, or still running at interpreter exit
        # (the finalizer holds the engine until then).
        self._delete = weakref.finalize(self, _delete_timer, libc, timer, tick, engine)

    def close(self) -> None:
        self._delete()


def _delete_timer(libc: ctypes.CDLL, timer: ctypes.c_void_p, tick: float,
                  _engine: wasmtime.Engine) -> None:
    libc.timer_delete(timer)
    # A notification already started may still be in wasmtime_engine_increment_epoch:
    # it takes microseconds, but the engine must outlive it.
    time.sleep(tick)


class ThreadTicker:
    """Ticks from a Python thread that catches up when it was late (the fallback)."""

    def __init__(self, engine: wasmtime.Engine, tick: float) -> None:
        self._engine = engine
        self._tick = tick
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._done = 0
        self._thread = threading.Thread(target=self._run, name="epoch-ticker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            due = int((time.monotonic() - self._start) / self._tick)
            while self._done < due:
                self._engine.increment_epoch()
                self._done += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)


def start_ticker(engine: wasmtime.Engine, tick: float) -> Ticker:
    """The native timer if this system has one, else the Python thread."""
    try:
        return TimerTicker(engine, tick)
    except OSError as exc:
        log.info("epoch ticks from a Python thread: %s", exc)
        return ThreadTicker(engine, tick)
