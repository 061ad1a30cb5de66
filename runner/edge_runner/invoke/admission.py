"""Concurrency gates: at most N at once, a bounded FIFO queue, a bounded wait.

The pool (:mod:`edge_runner.invoke.pool`) passes every invocation through two gates:
its function's own (``pool.maxInstances`` slots) and, for calls that run on a
worker thread, the runner-wide one (``--max-concurrency`` slots, one per
worker thread, so the executor itself never queues).  A request that finds a
gate full waits in its queue; if the queue is full, or no slot frees up before
its deadline, the pool answers 503 + ``Retry-After`` (reason ``concurrency``).

Event-loop only (no locks): :meth:`Gate.try_enter` is the allocation-free fast
path; :meth:`Gate.wait` queues.  A slot freed by :meth:`Gate.leave` is handed
straight to the oldest live waiter, so a newcomer can never overtake the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class GateFull(Exception):
    """The gate's queue is full: refuse at once."""


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Gate:
    __slots__ = ("_waiters", "capacity", "free", "max_waiting")

    def __init__(self, capacity: int, max_waiting: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self.max_waiting = max_waiting
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def busy(self) -> int:
        return self.capacity - self.free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_enter(self) -> bool:
        """Take a slot if one is free and nobody is queued; never waits."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, timeout: float) -> bool:
        """Queue for a slot for at most ``timeout`` seconds; False if none came.

        Raises :class:`GateFull` when ``max_waiting`` requests already wait.
        """
        if self.try_enter():
            return True
        if len(self._waiters) >= self.max_waiting:
            raise GateFull
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)
        timer = loop.call_later(max(timeout, 0.0), _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a slot was handed over: give it back.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.leave()
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):  # still queued: expired or cancelled
                self._waiters.remove(waiter)

    def leave(self) -> None:
        """Free a slot: hand it to the oldest live waiter, or mark it free."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1
