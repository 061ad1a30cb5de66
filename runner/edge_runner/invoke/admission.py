"""Concurrency gates: at most N at once, a bounded queue, a bounded wait.

The pool (:mod:`edge_runner.invoke.pool`) passes every invocation through two gates:
its function's own :class:`Gate` (``pool.maxInstances`` slots, FIFO) and, for
calls that run on a worker thread, the :class:`FairGate` of a lane of worker
threads (:mod:`edge_runner.invoke.lanes`: one slot per thread of the lane, so
its executor itself never queues).  A request that finds a gate full waits in
its queue; if the queue is full, or no slot frees up before its deadline, the
pool answers 503 + ``Retry-After`` (reason ``concurrency``).

The function's gate is FIFO: all its requests are alike.  A lane's threads are
shared by every function, so its gate is fair between functions instead of
between requests (docs/scheduling.md): each function queues on its own, and a
freed thread goes to the functions in turn (deficit round robin, charged with
the thread time each call really held), so a function flooding the queue, or
one whose calls hold a thread for long, cannot make the others wait behind all
of its requests; and no function holds more than ``cap`` of the threads at once.

Event-loop only (no locks): ``try_enter`` is the allocation-free fast path;
``wait`` queues.  A slot freed by ``leave`` is handed straight to the chosen
live waiter, so a newcomer can never overtake a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque


class GateFull(Exception):
    """The gate's queue is full: refuse at once."""


def _expire(waiter: asyncio.Future[bool]) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Gate:
    """A FIFO gate.  Every function has one, so its queue (a deque: 760 bytes) is made
    when a request first has to wait, not before: most functions of a runner with
    thousands never queue."""

    __slots__ = ("_waiters", "capacity", "free", "max_waiting")

    def __init__(self, capacity: int, max_waiting: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self.max_waiting = max_waiting
        #: Queued requests, oldest first; an empty tuple until one first queues.
        self._waiters: deque[asyncio.Future[bool]] | tuple[()] = ()

    @property
    def busy(self) -> int:
        return self.capacity - self.free

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def queue_made(self) -> bool:
        """Whether a request ever queued here (its queue exists)."""
        return isinstance(self._waiters, deque)

    def try_enter(self, name: str = "") -> bool:
        """Take a slot if one is free and nobody is queued; never waits.

        ``name`` (who asks), here and in :meth:`wait` and :meth:`leave`, is ignored:
        the same calls as a :class:`FairGate`'s.
        """
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def wait(self, timeout: float, name: str = "") -> bool:
        """Queue for a slot for at most ``timeout`` seconds; False if none came.

        Raises :class:`GateFull` when ``max_waiting`` requests already wait.
        """
        if self.try_enter():
            return True
        if len(self._waiters) >= self.max_waiting:
            raise GateFull
        waiters = self._waiters
        if not isinstance(waiters, deque):
            waiters = self._waiters = deque()
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        waiters.append(waiter)
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
                waiters.remove(waiter)

    def leave(self, name: str = "", cost: float = 0.0) -> None:
        """Free a slot: hand it to the oldest live waiter, or mark it free."""
        waiters = self._waiters
        while waiters:
            assert isinstance(waiters, deque)
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.free += 1


class _Flow:
    """One function's share of a :class:`FairGate`: its queue, slots held, credit, turn."""

    __slots__ = ("credit", "holding", "in_ring", "name", "turn", "waiters")

    def __init__(self, name: str) -> None:
        self.name = name
        self.waiters: deque[asyncio.Future[bool]] = deque()
        self.holding = 0
        #: Slot seconds it may still use; negative: what it owes.
        self.credit = 0.0
        #: When it last had its turn (0: never); the ring is ordered by it.
        self.turn = 0
        self.in_ring = False


class FairGate:
    """Slots shared fairly by functions: per-function queues served by deficit round robin.

    Functions with queued requests form a ring, the one whose turn came longest ago
    first.  A freed slot goes to the first function in the ring that holds fewer
    than ``cap`` slots and has credit: its turn adds ``quantum`` seconds of credit
    (up to ``quantum``) and takes it to the back of the ring, and it gets one slot.
    Each call is charged the seconds it held its slot when it leaves (:meth:`leave`).
    So functions whose calls are short take turns one request each, whatever the
    length of their queues (a function served at once, without queueing, has had
    its turn too); a function whose call held a slot for ``n`` quanta sits out about
    ``n`` turns of the others (its debt is kept while it is idle).  The gate is
    work-conserving: when every queued function is in debt, the ring skips ahead to
    the first that would have credit rather than leave a slot idle.  Only ``cap``
    leaves slots idle: a function at its cap waits even if a slot is free.
    """

    __slots__ = ("_flows", "_ring", "_turns", "cap", "capacity", "free", "max_waiting",
                 "quantum", "waiting")

    def __init__(self, capacity: int, max_waiting: int, *, cap: int | None = None,
                 quantum: float = 0.002) -> None:
        self.capacity = capacity
        self.free = capacity
        self.max_waiting = max_waiting
        #: Slots one function may hold at once.
        self.cap = capacity if cap is None else max(1, min(cap, capacity))
        self.quantum = quantum
        #: Requests queued, all functions together.
        self.waiting = 0
        self._flows: dict[str, _Flow] = {}
        self._ring: deque[_Flow] = deque()
        self._turns = 0

    @classmethod
    def sized(cls, capacity: int, max_waiting: int, *, share: float = 1.0,
              quantum: float = 0.002) -> FairGate:
        """A gate whose functions may each hold ``share`` of the slots (rounded up)."""
        return cls(capacity, max_waiting, cap=math.ceil(share * capacity), quantum=quantum)

    @property
    def busy(self) -> int:
        return self.capacity - self.free

    def holding(self, name: str) -> int:
        """Slots ``name`` holds now."""
        flow = self._flows.get(name)
        return flow.holding if flow is not None else 0

    def queued(self, name: str) -> int:
        """Requests of ``name`` waiting now."""
        flow = self._flows.get(name)
        return len(flow.waiters) if flow is not None else 0

    def _flow(self, name: str) -> _Flow:
        flow = self._flows.get(name)
        if flow is None:
            flow = self._flows[name] = _Flow(name)
        return flow

    def _take_turn(self, flow: _Flow) -> None:
        self._turns += 1
        flow.turn = self._turns

    def try_enter(self, name: str) -> bool:
        """Take a slot if one is free, nobody is queued and ``name`` is under its cap."""
        if self.free > 0 and not self.waiting:
            flow = self._flow(name)
            if flow.holding < self.cap:
                self.free -= 1
                flow.holding += 1
                self._take_turn(flow)
                return True
        return False

    async def wait(self, timeout: float, name: str) -> bool:
        """Queue for a slot for at most ``timeout`` seconds; False if none came.

        Raises :class:`GateFull` when ``max_waiting`` requests already wait.
        """
        if self.try_enter(name):
            return True
        if self.waiting >= self.max_waiting:
            raise GateFull
        flow = self._flow(name)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        flow.waiters.append(waiter)
        self.waiting += 1
        if not flow.in_ring:
            self._join(flow)
        self._dispatch()  # a slot may be free (the queue was behind a capped function)
        timer = loop.call_later(max(timeout, 0.0), _expire, waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            # Cancelled after a slot was handed over: give it back.
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self.leave(name, 0.0)
            raise
        finally:
            timer.cancel()
            if not (waiter.done() and not waiter.cancelled() and waiter.result()):
                self._forget(flow, waiter)  # expired or cancelled: maybe still queued

    def _join(self, flow: _Flow) -> None:
        """Put a function that starts queueing in its place: after those whose turn
        came before its own."""
        ring = self._ring
        index = len(ring)
        while index and ring[index - 1].turn > flow.turn:
            index -= 1
        ring.insert(index, flow)
        flow.in_ring = True

    def _forget(self, flow: _Flow, waiter: asyncio.Future[bool]) -> None:
        with contextlib.suppress(ValueError):
            flow.waiters.remove(waiter)
            self.waiting -= 1
        if not flow.waiters and flow.in_ring:
            flow.in_ring = False
            self._ring.remove(flow)
        self._tidy(flow)

    def _tidy(self, flow: _Flow) -> None:
        """Forget a function that holds nothing, waits for nothing and owes nothing, so
        the table keeps only those that matter (its next request is served in turn)."""
        if not flow.holding and not flow.waiters and flow.credit >= 0:
            self._flows.pop(flow.name, None)

    def leave(self, name: str, cost: float) -> None:
        """Free a slot held for ``cost`` seconds and hand it to the next function due."""
        flow = self._flows[name]
        flow.holding -= 1
        flow.credit -= cost
        self.free += 1
        self._dispatch()
        self._tidy(flow)

    def _dispatch(self) -> None:
        while self.free > 0 and self._ring:
            flow = self._next()
            if flow is None:
                return  # every queued function is at its cap
            waiter = flow.waiters.popleft()
            self.waiting -= 1
            if not flow.waiters:
                flow.in_ring = False
                self._ring.remove(flow)
            if waiter.done():  # expired, not yet woken: its turn is lost, not its slot
                continue
            waiter.set_result(True)
            self.free -= 1
            flow.holding += 1

    def _next(self) -> _Flow | None:
        """The next function due a slot (deficit round robin); None if all are capped."""
        ring, quantum, cap = self._ring, self.quantum, self.cap
        while True:
            for _ in range(len(ring)):
                flow = ring[0]
                ring.rotate(-1)  # its turn (used or not): to the back
                self._take_turn(flow)
                if flow.holding >= cap:
                    continue
                flow.credit = min(flow.credit + quantum, quantum)
                if flow.credit > 0:
                    return flow
            owing = [flow.credit for flow in ring if flow.holding < cap]
            if not owing:
                return None
            # Nobody has credit: skip the rounds until the first would.
            rounds = math.floor(-max(owing) / quantum)
            for flow in ring:
                if flow.holding < cap:
                    flow.credit += rounds * quantum
