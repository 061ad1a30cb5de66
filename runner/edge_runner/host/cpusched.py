"""CPU scheduling of the runner's own threads: the event loop first, guests last.

Called by :mod:`edge_runner.server` at start-up (on the event loop thread,
before any other thread exists) and as the initializer of its worker and
background threads.  Guests that burn CPU on worker threads compete with the
event loop thread, which parses every request and runs every inline call; when
both want a CPU, the event loop must get it at once, or every healthy request
waits behind a spinning guest for the rest of the guest's time slice.

Two Linux knobs, both per thread, both unprivileged, both best effort (a
failure is logged and the runner carries on):

* **nice** (``worker_nice``): worker threads run at a higher nice value, so the
  scheduler gives them a small share of a CPU the event loop also wants and
  lets the event loop preempt them when it wakes up.
* **slice** (``cpu_slice``): since Linux 6.12 the EEVDF scheduler takes a
  requested time slice per thread (``sched_setattr``'s ``sched_runtime``,
  0.1 ms to 100 ms; threads inherit it).  A running thread is protected from
  wake-up preemption for up to its slice, ~1.4 ms by default here.  The runner's
  threads ask for the shortest, so a request arriving while a guest occupies
  its CPU waits about 0.1 ms, not a whole default slice.  Measured with
  bench/hostile.py, giving the guests' threads the short slice as well beat
  giving it to the event loop alone (attacked p99 1.46-1.48 ms against
  1.66-1.69 ms): other processes of the node wake up faster too.  Older
  kernels accept and ignore the field for normal threads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
import threading

log = logging.getLogger("edge_runner.host.cpusched")

#: ``sched_setattr`` system call numbers by machine (no libc wrapper exists).
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
#: ``struct sched_attr`` version 0: size, policy, flags, nice, priority,
#: runtime, deadline, period.
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")
#: Bounds the kernel clamps a requested slice to, in seconds.
MIN_SLICE, MAX_SLICE = 0.0001, 0.1


def lower_priority(increment: int) -> None:
    """Executor initializer: raise the calling thread's nice value (per thread on Linux)."""
    if not increment:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except (OSError, AttributeError) as exc:
        log.warning("cannot lower the priority of guest and background threads: %s", exc)


def request_slice(seconds: float) -> bool:
    """Ask the scheduler for a ``seconds`` time slice for the calling thread and
    the threads it starts afterwards.

    Keeps the thread's policy (only normal threads are touched) and nice value.
    Returns whether the kernel took the request; 0 leaves the thread alone.
    """
    if not seconds:
        return False
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None or not hasattr(os, "sched_getscheduler"):
        log.info("no per-thread time slice on %s; threads keep the default",
                 platform.machine())
        return False
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        return False
    nanoseconds = round(min(max(seconds, MIN_SLICE), MAX_SLICE) * 1e9)
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    attr = ctypes.create_string_buffer(
        _SCHED_ATTR.pack(_SCHED_ATTR.size, os.SCHED_OTHER, 0, nice, 0, nanoseconds, 0, 0)
    )
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, attr, 0) != 0:
        log.warning("cannot set the threads' time slice: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


__all__ = ["MAX_SLICE", "MIN_SLICE", "lower_priority", "request_slice"]
