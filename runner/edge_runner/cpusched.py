"""CPU scheduling of the runner's own threads: the event loop first, guests last.

Called by :mod:`edge_runner.server` at start-up (event loop thread) and as the
worker-thread initializer.  Guests that burn CPU on worker threads compete with
the event loop thread, which parses every request and runs every inline call;
when both want a CPU, the event loop must get it at once, or every healthy
request waits behind a spinning guest for the rest of its time slice.

Two Linux knobs, both per thread, both unprivileged, both best effort (a
failure is logged once and the runner carries on):

* **nice** (``worker_nice``): worker threads run at a higher nice value, so the
  scheduler gives them a small share of a CPU the event loop also wants.
* **slice** (``loop_slice``): since Linux 6.12 the EEVDF scheduler takes a
  requested time slice per thread (``sched_setattr``'s ``sched_runtime``,
  0.1 ms to 100 ms) and lets a thread with a shorter slice preempt one with a
  longer slice when it wakes up.  The event loop thread asks for the shortest,
  so a request arriving while a guest occupies its CPU is handled within about
  0.1 ms, not after the guest's default ~1.4 ms slice.  Worker threads keep
  the default slice.  Older kernels accept and ignore the field for normal
  threads.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import struct
import threading

log = logging.getLogger("edge_runner.cpusched")

#: ``sched_setattr`` system call numbers by machine (no libc wrapper exists).
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}
#: ``struct sched_attr`` version 0: size, policy, flags, nice, priority,
#: runtime, deadline, period.
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")
#: Bounds the kernel clamps a requested slice to, in seconds.
MIN_SLICE, MAX_SLICE = 0.0001, 0.1


def background_thread(increment: int) -> None:
    """Executor initializer: the calling thread yields the CPU to the event loop.

    Raises its nice value by ``increment`` (per thread on Linux) and gives it the
    kernel's default slice back: threads inherit their creator's slice, and the
    event loop thread creates them.
    """
    tid = threading.get_native_id()
    if increment:
        try:
            os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
        except (OSError, AttributeError) as exc:
            log.warning("cannot lower the priority of worker threads: %s", exc)
    _set_slice(0)


def request_slice(seconds: float) -> bool:
    """Ask the scheduler for a ``seconds`` time slice for the calling thread.

    Keeps its policy (only normal threads are touched) and nice value.  Returns
    whether the kernel took the request; 0 leaves the thread alone.
    """
    if not seconds:
        return False
    nanoseconds = round(min(max(seconds, MIN_SLICE), MAX_SLICE) * 1e9)
    if not _set_slice(nanoseconds):
        log.warning("cannot set the event loop's time slice; it keeps the default")
        return False
    return True


def _set_slice(nanoseconds: int) -> bool:
    """``sched_setattr`` on the calling normal thread; 0 = the kernel's default slice."""
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None or not hasattr(os, "sched_getscheduler"):
        return False
    if os.sched_getscheduler(0) != os.SCHED_OTHER:
        return False
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    attr = ctypes.create_string_buffer(
        _SCHED_ATTR.pack(_SCHED_ATTR.size, os.SCHED_OTHER, 0, nice, 0, nanoseconds, 0, 0)
    )
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, 0, attr, 0) != 0:
        log.debug("sched_setattr: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


__all__ = ["MAX_SLICE", "MIN_SLICE", "background_thread", "request_slice"]
