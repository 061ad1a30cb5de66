"""Lanes of worker threads, and the quarantine of functions that keep hitting their limits.

Where it sits: the pool (:mod:`edge_runner.invoke.pool`) runs every call that
leaves the event loop on a :class:`Lane`: a set of worker threads behind a
:class:`~edge_runner.invoke.admission.FairGate`.  The server
(:mod:`edge_runner.server`) builds two: ``shared`` (``--max-concurrency``
threads, two per usable CPU) for every function, and ``quarantine``
(``--quarantine-threads``, at the lowest CPU priority) for functions whose
:class:`Conduct` says they keep failing or computing for long.  So a guest
looping until its timeout, trapping on every call or grinding through a
memory bomb stops taking turns on the threads that healthy thread-bound
functions (WAGI, demoted edge functions) need; it keeps getting its answers
(504, 502) from its own lane, and it is released when it behaves again.
docs/scheduling.md explains the choice and its measured trade-off.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor
from dataclasses import dataclass

from edge_runner.invoke.admission import FairGate

log = logging.getLogger("edge_runner.invoke.lanes")

#: Lane names: the ``lane`` label of ``edge_worker_wait_seconds``.
SHARED, QUARANTINE = "shared", "quarantine"
LANES = (SHARED, QUARANTINE)
#: A released function's strikes cap doubles per earlier quarantine, up to this factor.
MAX_REPEAT_FACTOR = 32


@dataclass(frozen=True, slots=True)
class Lane:
    """Worker threads and the gate in front of them (one slot per thread)."""

    name: str
    gate: FairGate
    executor: Executor


@dataclass(frozen=True, slots=True)
class QuarantinePolicy:
    """When a function goes to the quarantine lane and when it comes back.

    A call that failed (502 or 504) is a strike, and so is a call that computed for
    more than ``heavy_call`` seconds of CPU on a worker thread, counted in units of
    ``heavy_call`` (a call timed out after 100 ms of computing is 5 strikes with the
    default).  Every other call takes one strike off.  At ``strikes`` the function is
    quarantined; in quarantine, it is released when its strikes are back at zero.
    Strikes are capped at twice ``strikes`` (times 2 for every earlier quarantine, up
    to 32x), so a function that behaves is back after at most that many good calls,
    and a repeat offender must behave longer.
    """

    #: Strikes that quarantine a function; 0 = never.
    strikes: float = 3.0
    #: CPU seconds of one call on a worker thread beyond which it is a strike.
    heavy_call: float = 0.02


class Conduct:
    """How one function behaved lately: its strikes and whether it is quarantined.

    Called on the event loop by the pool after each call; methods return
    ``"quarantined"`` or ``"released"`` when the call changed the state, else None.
    """

    __slots__ = ("_policy", "quarantined", "strikes", "times")

    def __init__(self, policy: QuarantinePolicy) -> None:
        self._policy = policy
        self.strikes = 0.0
        self.quarantined = False
        #: Times it was quarantined.
        self.times = 0

    def failed(self, cpu: float) -> str | None:
        """A call that failed (502/504) after ``cpu`` seconds of computing."""
        return self._strike(max(1.0, cpu / self._policy.heavy_call))

    def served(self, cpu: float) -> str | None:
        """A call that succeeded after ``cpu`` seconds of computing (0 for inline calls)."""
        heavy = self._policy.heavy_call
        if cpu > heavy:
            return self._strike(cpu / heavy)
        if not self.strikes:
            return None
        self.strikes = max(0.0, self.strikes - 1.0)
        if self.quarantined and not self.strikes:
            self.quarantined = False
            return "released"
        return None

    def _strike(self, weight: float) -> str | None:
        limit = self._policy.strikes
        if not limit:
            return None
        cap = 2 * limit * min(2 ** max(self.times - 1, 0), MAX_REPEAT_FACTOR)
        self.strikes = min(self.strikes + weight, cap)
        if self.quarantined or self.strikes < limit:
            return None
        self.quarantined = True
        self.times += 1
        # A repeat offender starts at its (higher) cap: it must behave that much longer.
        if self.times > 1:
            self.strikes = 2 * limit * min(2 ** (self.times - 1), MAX_REPEAT_FACTOR)
        return "quarantined"


def idle_priority() -> None:
    """Executor initializer of the quarantine lane: the calling thread gets the
    ``SCHED_IDLE`` policy, so it runs only on CPU time that every other thread of the
    process (event loop, shared workers at ``--worker-nice``) leaves over; where that
    is refused, nice 19.  Here rather than in :mod:`edge_runner.host.cpusched`
    because only the quarantine lane uses it."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError) as exc:
        log.warning("quarantine threads cannot use SCHED_IDLE (%s): nice 19 instead", exc)
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (OSError, AttributeError) as nice_exc:
            log.warning("cannot lower the priority of quarantine threads: %s", nice_exc)
