"""What a function's pool (:mod:`edge_runner.invoke.pool`) is given and reports to.

The policies every pool of a runner shares (how requests queue, when calls run
inline on the event loop), the limits all functions share (memory budget, worker
threads), the events a pool reports for metrics, and its counters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from mypy_extensions import mypyc_attr

from edge_runner.invoke.admission import FairGate, Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.lanes import Lane


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How requests wait for a concurrency slot of a function."""

    #: Requests allowed to wait per function once all its instances are busy.
    max_waiting: int = 64
    #: Seconds a request may wait for a slot (function and runner-wide gates
    #: together) before it gets 503.
    max_wait: float = 1.0


@dataclass(frozen=True, slots=True)
class InlinePolicy:
    """Speculative inline execution of edge calls on the event loop thread.

    Handing a call to a worker thread and back costs ~100 us of thread wake-ups
    on a small VM, several times the call itself (~16 us for a small guest).
    So a call first runs on the event loop with a small budget; a guest that
    needs more (in its start code or its handler) is stopped there (bounded
    stall: ``budget`` instructions and at most ``max_stall`` seconds plus one
    epoch tick), its instance discarded, the request re-run from scratch on a
    worker thread with the function's full limits (minus the wall time already
    spent), and the function stays on threads for ``backoff`` seconds.  Time is
    judged with more care, because a VM pause, a preemption or a GIL hand-off can
    make any one call look slow: a function goes to threads for ``slow_backoff``
    seconds after one call stopped by ``max_stall`` during which the event loop
    thread really computed for half of it (its CPU time, which descheduling
    does not add to), or after ``slow_calls`` inline calls in a row took longer
    than ``slow_call`` or were stopped by ``max_stall`` otherwise.  (Demoting a
    healthy function by mistake is costly: on threads it queues with whatever
    else runs there, hostile guests included.)  Repeat offenders wait twice as
    long each time (up to 32x); one fast inline call forgives them.  A function
    whose inline call failed (a trap, a bad response, its own fuel limit) goes
    to threads for ``failure_backoff`` seconds too.

    Re-running is safe because a speculative run has no effect outside its own
    instance, which is thrown away: the guest has no filesystem, network or
    clock it can change (:func:`edge_runner.abi.edge.make_wasi`), its output is
    discarded unlogged, and the client has seen nothing yet.  This is not a
    retry of a failed request: the first run did not fail, it was preempted.
    """

    #: Wasm fuel (roughly instructions) a call may use inline; 0 = never inline.
    budget: int = 1_000_000
    #: Seconds a call may run inline (rounded up to epoch ticks, plus one): host
    #: calls such as the WASI clock cost time but little fuel.  A few ticks, not
    #: one: the ticker catches up in bursts after waiting for the GIL, and a call
    #: stopped by the clock before ``max_stall`` really passed is re-run on a
    #: thread without demoting the function.
    max_stall: float = 0.01
    #: Seconds an inline call may take, however it ends: the bound for guests whose
    #: time goes to host calls that fuel does not see (WASI ``random_get`` of large
    #: buffers, or a descheduled event loop).
    slow_call: float = 0.005
    #: Slow inline calls in a row that move a function to threads.
    slow_calls: int = 3
    #: Seconds a function that needed more fuel than ``budget`` runs on threads only.
    backoff: float = 30.0
    #: Seconds a function that was too slow runs on threads only.
    slow_backoff: float = 5.0
    #: Seconds a function whose inline call failed (502/504) runs on threads only:
    #: a failure costs a fresh instance and a trap unwind, work a failing (or
    #: hostile) function should not put on the event loop every healthy request needs.
    failure_backoff: float = 5.0


DEFAULT_INLINE = InlinePolicy()


@dataclass(frozen=True, slots=True)
class SharedLimits:
    """What all functions of one runner share: the memory budget and the worker threads."""

    budget: MemoryBudget
    #: The gate of the shared lane (the executor given to each runtime), one slot per
    #: worker thread; the server's is fair between functions, a plain FIFO :class:`Gate`
    #: ignores which function asks.
    threads: Gate | FairGate
    #: The lane of quarantined functions; None: no function is ever quarantined.
    quarantine: Lane | None = None

    @classmethod
    def unbounded(cls) -> SharedLimits:
        return cls(budget=MemoryBudget.unlimited(), threads=Gate(2**31, 0))


class Clock(Protocol):
    """The clocks a pool reads: the ``time`` module, or a test's fake (a patched module
    global would not reach a compiled pool)."""

    def monotonic(self) -> float: ...

    def thread_time(self) -> float: ...

    def perf_counter(self) -> float: ...


@mypyc_attr(allow_interpreted_subclasses=True)  # the catalog's subclass counts metrics
class PoolEvents:
    """Where a pool reports what metrics count.  The catalog passes one wired to
    Prometheus; this default ignores everything."""

    def cold_start(self, seconds: float | None) -> None:
        """An instance was created; ``seconds`` it took (None: not timed, WAGI)."""

    def evicted(self, cause: str, count: int = 1) -> None:
        """Instances were dropped, by cause: failure, recycle, idle or budget."""

    def renewed(self) -> None:
        """An instance was renewed for another request (``pool.reuse: false``)."""

    def thread_wait(self, lane: str, seconds: float) -> None:
        """A call got a worker thread of ``lane`` after waiting ``seconds`` (0: at once)."""

    def quarantined(self, entered: bool) -> None:
        """The function went to the quarantine lane (True) or was released (False)."""


@dataclass(slots=True)
class PoolStats:
    cold_starts: int = 0
    discarded: int = 0
    served: int = 0
    renewed: int = 0
    demotions: int = 0
    evicted: int = 0
    quarantines: int = 0
    last_used: float = field(default_factory=time.monotonic)
