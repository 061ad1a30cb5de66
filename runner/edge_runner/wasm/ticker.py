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

The timer rests while no guest runs.  The C library starts a thread for every
notification, 200 a second: an idle runner spent 2-3% of a core on them, and
three idle runners cut the throughput of another server on the same two cores
by a quarter (their wake-ups, measured with ``bench/baseline_app.py``).  So
every guest run is bracketed by :meth:`TimerTicker.hold` and
:meth:`TimerTicker.release` (the pool does it, ``FunctionRuntime._run``): the
first hold arms the timer if it rests, and :meth:`TimerTicker.rest`, called
periodically (the runner's idle sweep, every second), disarms it when no run
started since the last call and none is running.  Deadlines count from the
epoch when they are set, so a pause between runs changes nothing for them.
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
    """Advances an engine's epoch every ``tick`` seconds until closed (while guests run,
    at least: see :meth:`hold`)."""

    def hold(self) -> None:
        """A guest run starts: ticks are needed until the matching :meth:`release`."""
        ...  # pragma: no cover - protocol

    def release(self) -> None:
        """The guest run that :meth:`hold` announced has ended."""
        ...  # pragma: no cover - protocol

    def rest(self) -> bool:
        """Stop ticking if no run started since the last call and none runs; True if
        the ticks stopped now.  The next :meth:`hold` starts them again."""
        ...  # pragma: no cover - protocol

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
        # The timer calls into the engine: it is deleted before the engine can be freed,
        # whether this ticker is closed, dropped, or still running at interpreter exit
        # (the finalizer holds the engine until then).
        self._delete = weakref.finalize(self, _delete_timer, libc, timer, tick, engine)
        self._libc, self._timer = libc, timer
        seconds, fraction = divmod(tick, 1.0)
        period = _Timespec(int(seconds), round(fraction * 1e9))
        self._ticking = ctypes.byref(_Itimerspec(period, period))
        self._resting = ctypes.byref(_Itimerspec())
        self._lock = threading.Lock()
        self._running = 0  # runs between hold and release
        self._started = 0  # holds so far
        self._seen = 0  # holds at the last rest()
        self._armed = False
        try:
            self._arm(self._ticking)  # ticking from the start
        except OSError:
            self._delete()
            raise

    def hold(self) -> None:
        with self._lock:
            if not self._armed and self._delete.alive:
                self._arm(self._ticking)  # raises if it cannot: then nothing is held
            self._running += 1
            self._started += 1

    def release(self) -> None:
        with self._lock:
            self._running -= 1

    def rest(self) -> bool:
        with self._lock:
            quiet = self._started == self._seen and not self._running
            self._seen = self._started
            if quiet and self._armed and self._delete.alive:
                self._arm(self._resting)
                return not self._armed
        return False

    def close(self) -> None:
        with self._lock:
            self._armed = False
            self._delete()

    @property
    def armed(self) -> bool:
        """Is the timer ticking now?"""
        return self._armed

    def _arm(self, setting: object) -> None:
        """Set the timer ticking or resting; under the lock.  Raises OSError if it
        cannot tick again (no guest may run without its time limit)."""
        if self._libc.timer_settime(self._timer, 0, setting, None):
            errno = ctypes.get_errno()
            if setting is self._ticking:
                raise OSError(errno, "the epoch timer could not start ticking")
            log.warning("the epoch timer could not rest (errno %d); it keeps ticking", errno)
            return
        self._armed = setting is self._ticking


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

    def hold(self) -> None:
        """Ticks never stop here (a Python thread's wake-ups need no rest)."""

    def release(self) -> None:
        pass

    def rest(self) -> bool:
        return False

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
