"""The runner's memory budget: guest memory is reserved before it exists.

A runner pod shares one memory limit among all its functions.  Each instance
may grow its linear memory up to its function's ``limits.memory``, so before
the pool (:mod:`edge_runner.invoke.pool`) creates an instance it reserves that much
here; the reservation is released when the instance is discarded.  Compiled
modules in memory reserve their size too (:mod:`edge_runner.invoke.modules`),
and so does each served function's bookkeeping (``FUNCTION_BYTES`` of
:mod:`edge_runner.invoke.catalog`).  The invariant is::

    baseline + sum(compiled modules in memory) + functions * FUNCTION_BYTES
             + sum(limits.memory of each live instance) <= fraction * limit

where ``limit`` is, first found: ``--memory-limit``; ``$EDGE_RUNNER_MEMORY_LIMIT``
(the Helm chart sets it from the container's ``limits.memory`` through the
downward API); the cgroup memory limit of the pod (cgroup v2 ``memory.max``,
else v1 ``memory.limit_in_bytes``; the tightest along the hierarchy); or a
default when there is none (a laptop); and
``baseline`` is the runner's own resident memory measured at start-up, after
the engine and both servers exist.  An instance that does not fit first evicts
idle instances and compiled modules no instance uses (least recently used
first; a module comes back from the disk cache); if it still does not fit the
request gets 503 + ``Retry-After`` (reason ``memory_budget``) instead of the
kernel OOM-killing the pod.  Reservations are upper bounds (untouched pages
cost nothing), so the budget is conservative, never optimistic.

Built by :mod:`edge_runner.server`; exposed as ``edge_memory_budget_bytes``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from edge_runner.host.cgroups import read_cgroup_limit

log = logging.getLogger("edge_runner.invoke.budget")


def resident_bytes() -> int:
    """This process's resident set size now (bytes)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return pages * os.sysconf("SC_PAGE_SIZE")


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``); False
    where there is no such call.  Loading thousands of functions frees as much as it
    keeps (manifests, artifacts read from disk, modules evicted at once), scattered
    among what stays, and malloc keeps those pages resident until asked: a few ms
    after a large apply that is 5-10% of the runner's memory.  Blocking: call it off
    the event loop."""
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


class Reclaimable(Protocol):
    """A pool whose idle instances the budget may evict (:mod:`edge_runner.invoke.pool`),
    or a compiled module no instance uses (:mod:`edge_runner.invoke.modules`)."""

    @property
    def last_used(self) -> float: ...

    def evict_idle(self) -> bool: ...


class MemoryBudget:
    """Reservations of guest linear memory against the pod's limit; thread-safe."""

    def __init__(self, *, limit: int, fraction: float, baseline: int, source: str) -> None:
        self.limit = limit
        self.baseline = baseline
        self.usable = int(limit * fraction) - baseline
        self.source = source
        self.reserved = 0
        self.refusals = 0
        self._lock = threading.Lock()
        #: Registered pools, held until they unregister (FunctionRuntime.close does; the
        #: catalog closes every runtime it replaces).  Not a WeakSet: compiled runtimes
        #: (mypyc, setup.py) take no weak references.
        self._pools: set[Reclaimable] = set()

    @classmethod
    def unlimited(cls) -> MemoryBudget:
        return cls(limit=2**62, fraction=1.0, baseline=0, source="unlimited")

    @classmethod
    def detect(
        cls, *, limit: int | None, default_limit: int, fraction: float, cgroup_root: Path
    ) -> MemoryBudget:
        """Size the budget: ``limit`` if set (the ``memory-limit`` setting), else the
        cgroup's, else ``default_limit``; ``fraction`` of it minus the resident memory now."""
        if limit is not None:
            source = "the memory-limit setting"
        else:
            found = read_cgroup_limit(cgroup_root)
            if found is not None:
                limit, source = found[0], str(found[1])
            else:
                limit, source = default_limit, "default (no cgroup limit)"
        budget = cls(
            limit=limit, fraction=fraction, baseline=resident_bytes(), source=source
        )
        log.info(
            "memory budget: limit %d bytes from %s, baseline %d, usable for guests %d",
            budget.limit, budget.source, budget.baseline, budget.usable,
        )
        if budget.usable <= 0:
            log.warning("memory budget leaves nothing for guests: every instance will get 503")
        return budget

    @property
    def headroom(self) -> int:
        return self.usable - self.reserved

    def register(self, pool: Reclaimable) -> None:
        with self._lock:
            self._pools.add(pool)

    def unregister(self, pool: Reclaimable) -> None:
        with self._lock:
            self._pools.discard(pool)

    def reserve(self, size: int) -> bool:
        """Reserve ``size`` bytes, evicting idle instances if needed; False if it cannot fit."""
        while True:
            with self._lock:
                if self.reserved + size <= self.usable:
                    self.reserved += size
                    return True
                pools = sorted(
                    (p for p in self._pools), key=lambda p: p.last_used
                )
            if not any(pool.evict_idle() for pool in pools):
                with self._lock:
                    self.refusals += 1
                return False

    def force(self, size: int) -> None:
        """Count ``size`` bytes that exist whether or not they fit (a compiled module
        that cannot be evicted): the headroom of instances shrinks instead."""
        with self._lock:
            self.reserved += size

    def release(self, size: int) -> None:
        with self._lock:
            self.reserved -= size

    def describe(self) -> dict[str, object]:
        return {
            "limit": self.limit, "source": self.source, "baseline": self.baseline,
            "usable": self.usable, "reserved": self.reserved, "headroom": self.headroom,
            "refusals": self.refusals,
        }
