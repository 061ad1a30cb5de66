"""A loaded function and its pool of instances.

:class:`FunctionRuntime` is what the catalog (:mod:`edge_runner.invoke.catalog`) keeps
per function: the spec, the compiled module, its ABI executor
(:mod:`edge_runner.abi`) and the instances.  The data plane calls
:meth:`FunctionRuntime.invoke` with the routed request; the executor encodes
it, and the invocation passes, in order:

1. the function's gate (:mod:`edge_runner.invoke.admission`): at most
   ``pool.maxInstances`` at once, a bounded queue, a bounded wait, else 503;
2. for ABIs that allow it (``edge``), a speculative run on the event loop
   under a small fuel budget (:class:`~edge_runner.invoke.policy.InlinePolicy`);
3. otherwise a lane of worker threads (:mod:`edge_runner.invoke.lanes`): its
   gate (one slot per thread, the same bounded wait, fair between functions)
   and a thread, so a slow or endless guest never blocks the event loop or
   other functions.  Functions run on the ``shared`` lane, except those whose
   :class:`~edge_runner.invoke.lanes.Conduct` put them in quarantine: they run
   on the ``quarantine`` lane only (never inline) until they behave again.

Every instance reserves its ``limits.memory`` in the runner's memory budget
(:mod:`edge_runner.invoke.budget`) before it is created and releases it when it is
dropped, and holds its compiled module (:mod:`edge_runner.invoke.modules`,
which may have to reload it from the disk cache first) while it lives; an
instance that does not fit is refused with 503 (``memory_budget``).
With ``pool.reuse`` an instance that served a request successfully goes back
to the idle stack (most recently used first, so the hottest stay warm) and its
globals persist; it is dropped after ``pool.idleTimeout`` unused, when the
budget needs room, or after any failure.  Without reuse (and for ABIs whose
instances serve one request, ``wagi``) every request gets a fresh instance from
the pre-instantiated template, or, for an ``edge`` module that allows it, an
instance renewed after its last request to the state it was instantiated in
(:mod:`edge_runner.wasm.renewal`: the same as new, for a fraction of the cost),
which waits on the idle stack like a reused one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import NamedTuple

from edge_api.models import EdgeFunctionSpec
from edge_runner.abi import AbiExecutor, HttpRequest, Instance, Response, executor_for
from edge_runner.abi.base import BudgetExceeded, Speculation
from edge_runner.errors import GuestFailure, GuestTimeout, Unavailable
from edge_runner.invoke.admission import FairGate, Gate, GateFull
from edge_runner.invoke.lanes import SHARED, Conduct, QuarantinePolicy
from edge_runner.invoke.modules import ModuleSlot
from edge_runner.invoke.policy import (
    DEFAULT_INLINE,
    Clock,
    InlinePolicy,
    PoolEvents,
    PoolStats,
    QueuePolicy,
    SharedLimits,
)
from edge_runner.wasm.engine import CompiledModule, WasmEngine

log = logging.getLogger("edge_runner.invoke.pool")


class Preempted(NamedTuple):
    """An inline attempt that did not finish (``spent`` wall seconds): re-run on a thread."""
    spent: float


NOT_INLINE = Preempted(0.0)  # not attempted inline at all


class FunctionRuntime:
    """One version (digest + spec) of one function, with its instances."""

    def __init__(
        self,
        *,
        name: str,
        spec: EdgeFunctionSpec,
        compiled: CompiledModule | ModuleSlot,
        engine: WasmEngine,
        executor: Executor,
        queue: QueuePolicy,
        inline: InlinePolicy = DEFAULT_INLINE,
        events: PoolEvents | None = None,
        max_requests: int = 0,
        renew: bool = True,
        shared: SharedLimits | None = None,
        quarantine: QuarantinePolicy | None = None,
        clock: Clock = time,
    ) -> None:
        self.name = name
        self.spec = spec
        #: The compiled module; the catalog's slots may be evicted and reloaded.
        self.compiled = compiled if isinstance(compiled, ModuleSlot) \
            else ModuleSlot.pinned(compiled)
        self.digest = compiled.digest
        self.engine = engine
        self.abi: AbiExecutor = executor_for(spec.abi)
        self._reuse = spec.pool.reuse and self.abi.reusable
        #: Without reuse, renew instances (where the module allows) instead of dropping them.
        self._renew = renew and not self._reuse and self.abi.reusable
        self._executor = executor
        self._queue = queue
        self._events = events or PoolEvents()
        #: Requests after which an instance is recycled (0 = never).
        self._max_requests = max_requests
        self._inline_policy = inline
        #: The clocks it reads (the ``time`` module; tests give a fake one).
        self._clock = clock
        self._inline_after = 0.0
        self._slow_streak = self._repeat_demotions = 0
        self._speculation = Speculation(fuel=inline.budget, seconds=inline.max_stall,
                                        ticks=engine.deadline_ticks(inline.max_stall))
        self._gate = Gate(spec.pool.max_instances, queue.max_waiting)
        shared = shared or SharedLimits.unbounded()
        self._threads = shared.threads
        self._quarantine = shared.quarantine
        self._conduct = Conduct(quarantine or QuarantinePolicy())
        self._budget = shared.budget
        self._reservation = spec.limits.memory
        self._idle: list[Instance] = []
        self.stats = PoolStats()
        self.closed = False
        self._budget.register(self)

    # -- what the data plane calls -------------------------------------------------

    async def invoke(self, request: HttpRequest, *, preempted: float | None = None) -> Response:
        """Run ``request`` inline if it may and fits, else on a worker thread
        (straight there with ``preempted``: seconds an :meth:`invoke_now` spent)."""
        gate = self._gate
        waited = 0.0 if gate.try_enter() else await self._wait(gate, self._queue.max_wait)
        try:
            payload = self.abi.encode(request)
            if preempted is None:
                outcome = self._attempt_inline(payload, request.request_id)
                if not isinstance(outcome, Preempted):
                    return outcome
                preempted = outcome.spent
            return await self._on_thread(waited, self._run, payload, request.request_id,
                                         None, preempted)
        finally:
            gate.leave()

    def invoke_now(self, request: HttpRequest) -> Response | Preempted | None:
        """Run ``request`` inline now, without waiting (:mod:`edge_runner.http.fastpath`):
        the response; :class:`Preempted` (finish with ``invoke(request, preempted=...)``);
        None: not inline now, or every instance busy (:meth:`invoke` does it all)."""
        if not self._inline_now() or not self._gate.try_enter():
            return None
        try:
            return self._attempt_inline(self.abi.encode(request), request.request_id, True)
        finally:
            self._gate.leave()

    def _inline_now(self) -> bool:  # may a call run on the event loop now?
        return bool(self._inline_policy.budget) and self.abi.inline \
            and self._clock.monotonic() >= self._inline_after and not self._conduct.quarantined

    def _attempt_inline(self, payload: object, request_id: str, checked: bool = False
                        ) -> Response | Preempted:
        """A speculative inline run (:class:`.policy.InlinePolicy`), judged (``checked``: may
        run)."""
        if not checked and not self._inline_now():
            return NOT_INLINE
        inline = self._inline_policy
        started, computed = self._clock.monotonic(), self._clock.thread_time()
        try:
            response = self._run(payload, request_id, self._speculation, 0.0)
        except (GuestFailure, GuestTimeout):
            self._demote(inline.failure_backoff, "its call failed")
            self._behaved(failed=True, cpu=0.0)
            raise
        except BudgetExceeded as exceeded:
            spent = self._clock.monotonic() - started
            if not exceeded.by_time:
                self._demote(inline.backoff, "it needs more fuel than inline calls get")
            elif self._clock.thread_time() - computed >= inline.max_stall / 2:
                # The loop thread really computed for it (the guest, or host
                # calls such as the WASI clock): it may not do that again.
                self._demote(inline.slow_backoff, "an inline call ran its time cap")
            elif spent >= inline.max_stall:
                # The time went elsewhere: the thread waited (guest output) or
                # was descheduled, which is no fault of the guest.  A strike.
                self._slow()
            # Either way (or a clock that jumped ahead): re-run it on a thread.
            return Preempted(spent)
        if self._conduct.strikes:
            self._behaved(failed=False, cpu=0.0)
        return response

    def _demote(self, base: float, why: str) -> None:
        now = self._clock.monotonic()
        if now < self._inline_after:
            return
        backoff = base * 2 ** min(self._repeat_demotions, 5)
        self._repeat_demotions += 1
        self._inline_after = now + backoff
        self.stats.demotions += 1
        log.info("%s runs on worker threads for %.0fs: %s", self.name, backoff, why,
                 extra={"function": self.name})

    async def _on_thread(
        self, waited: float, work: Callable[..., Response], *args: object
    ) -> Response:
        lane = self._quarantine if self._conduct.quarantined else None
        name, gate, executor = (SHARED, self._threads, self._executor) if lane is None \
            else (lane.name, lane.gate, lane.executor)
        if gate.try_enter(name=self.name):
            self._events.thread_wait(name, 0.0)
        else:
            queued = self._clock.monotonic()
            try:
                await self._wait_lane(gate, self._queue.max_wait - waited, quarantine=bool(lane))
            finally:
                self._events.thread_wait(name, self._clock.monotonic() - queued)
        cpu: list[float] = []
        started = self._clock.monotonic()
        try:
            loop = asyncio.get_running_loop()
            response = await loop.run_in_executor(executor, self._timed, cpu, work, *args)
        except (GuestFailure, GuestTimeout):
            self._behaved(failed=True, cpu=sum(cpu))
            raise
        finally:
            gate.leave(name=self.name, cost=self._clock.monotonic() - started)
        self._behaved(failed=False, cpu=sum(cpu))
        return response

    def _timed(self, cpu: list[float], work: Callable[..., Response], *args: object
               ) -> Response:
        """Run ``work`` on a worker thread, adding the CPU seconds it took to ``cpu``."""
        started = self._clock.thread_time()
        try:
            return work(*args)
        finally:
            cpu.append(self._clock.thread_time() - started)

    def _behaved(self, *, failed: bool, cpu: float) -> None:
        """Judge a call for the quarantine (:class:`~edge_runner.invoke.lanes.Conduct`)."""
        if self._quarantine is None:
            return
        conduct = self._conduct
        change = conduct.failed(cpu) if failed else conduct.served(cpu)
        if change is None:
            return
        entered = change == "quarantined"
        if entered:
            self.stats.quarantines += 1
        self._events.quarantined(entered)
        log.warning("%s %s the quarantine lane (strikes %.1f)", self.name,
                    "moves to" if entered else "leaves", conduct.strikes,
                    extra={"function": self.name})

    async def _wait_lane(self, gate: Gate | FairGate, timeout: float, *, quarantine: bool
                         ) -> None:
        """Queue for a worker thread of a lane, or raise (503, or 504 in quarantine).

        A quarantined function's request waits at most its own ``limits.timeout``: past
        that, its client would get 504 anyway, and a function that keeps timing out
        must not pile up requests that each hold a thread for a whole timeout later.
        """
        if not quarantine:
            await self._wait(gate, timeout, what="the runner's worker threads are")
            return
        limit = self.spec.limits.timeout
        if limit >= timeout:
            await self._wait(gate, timeout, what="the quarantine lane's worker threads are")
            return
        try:
            entered = await gate.wait(name=self.name, timeout=limit)
        except GateFull as exc:
            raise Unavailable("concurrency", f"{self.name}: the quarantine lane's worker"
                              " threads are busy and the queue is full") from exc
        if not entered:
            raise GuestTimeout("timeout", f"{self.name} is quarantined (docs/scheduling.md)"
                               f" and waited its whole time limit ({limit:g}s) for a thread",
                               guest_started=False)

    async def _wait(
        self, gate: Gate | FairGate, timeout: float, *, what: str = "all instances are"
    ) -> float:
        """Queue at ``gate``; returns seconds waited or raises Unavailable (503)."""
        started = self._clock.monotonic()
        try:
            entered = await gate.wait(name=self.name, timeout=timeout)
        except GateFull as exc:
            raise Unavailable(
                "concurrency", f"{self.name}: {what} busy and the queue is full"
            ) from exc
        if not entered:
            raise Unavailable(
                "concurrency",
                f"{self.name}: {what} busy; none became free within {self._queue.max_wait}s",
            )
        return self._clock.monotonic() - started

    # -- worker-thread (or inline) side ----------------------------------------------

    def _run(
        self, payload: object, request_id: str, speculation: Speculation | None, spent: float
    ) -> Response:
        """:meth:`_serve`, the engine's epoch ticking meanwhile (it rests between runs)."""
        engine = self.engine
        engine.hold_ticks()
        try:
            return self._serve(payload, request_id, speculation, spent)
        finally:
            engine.release_ticks()

    def _serve(
        self, payload: object, request_id: str, speculation: Speculation | None, spent: float
    ) -> Response:
        instance = None
        if self._idle:  # reused, or renewed (see _keep)
            try:
                instance = self._idle.pop()
            except IndexError:  # another thread took the last one
                pass
            else:
                self._unpark(instance)
        if instance is None:
            instance = self._new_instance(request_id, speculation)
        try:
            if speculation is None:
                response = instance.invoke(payload, request_id, spent=spent)
            else:
                response = self._invoke_inline(instance, payload, request_id, speculation)
        except BudgetExceeded:
            self._events.evicted("preempted")  # re-run on a thread: not a failure
            self._drop(instance)
            raise
        except BaseException:
            if self.abi.reusable:  # a per-request instance is not evicted by failing
                self.stats.discarded += 1
                self._events.evicted("failure")
            self._drop(instance)
            raise
        self.stats.served += 1
        if self._max_requests and instance.served >= self._max_requests and self.abi.reusable:
            self._events.evicted("recycle")
            self._drop(instance)
        elif self._keep(instance):
            instance.idle_since = self.stats.last_used = self._clock.monotonic()
            self._park(instance)
            self._idle.append(instance)
            if self.closed:  # closed meanwhile: nobody else will drain it
                self._drain_idle()
        else:
            self._drop(instance)
        return response

    def _keep(self, instance: Instance) -> bool:
        """May ``instance``, which just served a request, serve another?  With
        ``pool.reuse`` as it is; without, only once renewed (:meth:`Instance.renew`)."""
        if self.closed:
            return False
        if self._reuse:
            return True
        if not self._renew:
            return False
        try:
            renewed = instance.renew()
        except Exception as exc:  # a renewal that failed: a new instance next time
            log.warning("%s: renewing an instance failed (%s); the next request gets a new one",
                        self.name, exc)
            return False
        if renewed:
            self.stats.renewed += 1
            self._events.renewed()
        return renewed

    def _invoke_inline(
        self, instance: Instance, payload: object, request_id: str, speculation: Speculation
    ) -> Response:
        """A speculative call, timed (not the creation of a cold instance): see :meth:`_slow`.
        A call the speculative budget preempted is judged by :meth:`_attempt_inline`."""
        started = self._clock.monotonic()
        try:
            response = instance.invoke(payload, request_id, speculation=speculation)
        except BudgetExceeded:
            raise  # preempted: judged by _attempt_inline
        except BaseException:
            # A failure is judged by _attempt_inline (failure_backoff); it never counts as the
            # fast call that forgives earlier demotions, but it may be a slow one.
            if self._clock.monotonic() - started > self._inline_policy.slow_call:
                self._slow()
            raise
        self._judge(self._clock.monotonic() - started)
        return response

    def _judge(self, took: float) -> None:
        if took > self._inline_policy.slow_call:
            self._slow()
        elif self._slow_streak or self._repeat_demotions:
            self._slow_streak = self._repeat_demotions = 0

    def _slow(self) -> None:
        """A slow inline call; ``slow_calls`` in a row move the function to threads."""
        self._slow_streak += 1
        if self._slow_streak >= self._inline_policy.slow_calls:
            self._slow_streak = 0
            self._demote(self._inline_policy.slow_backoff, "its inline calls were slow")

    def _new_instance(self, request_id: str, speculation: Speculation | None) -> Instance:
        started = self._clock.perf_counter()
        module = self.compiled.acquire()  # reloaded from the disk cache if evicted
        try:
            self._reserve(self._reservation)
        except BaseException:
            self.compiled.release()
            raise
        try:
            instance = self.abi.instantiate(
                self.engine, module, self.name, self.spec, speculation=speculation,
                request_id=request_id, renew=self._renew,
            )
        except BaseException:
            self._budget.release(self._reservation)  # the instance closed its own store
            self.compiled.release()
            raise
        instance.reserved = self._reservation
        self.stats.cold_starts += 1
        self._events.cold_start(
            self._clock.perf_counter() - started if self.abi.timed_start else None)
        return instance

    def _reserve(self, size: int) -> None:
        if not self._budget.reserve(size):
            budget = self._budget
            raise Unavailable(
                "memory_budget",
                f"{self.name}: an instance needs {self._reservation} bytes of memory and the"
                f" runner has {max(budget.headroom, 0)} left of its budget",
            )

    def _park(self, instance: Instance) -> None:
        """An instance goes idle: it cannot grow until it is used again, so it keeps only
        what its linear memory holds now reserved, and frees the rest of the budget."""
        held = min(instance.memory_bytes(), self._reservation)
        self._budget.release(instance.reserved - held)
        instance.reserved = held

    def _unpark(self, instance: Instance) -> None:
        """An idle instance is about to run and may grow to its limit again."""
        need = self._reservation - instance.reserved
        if need > 0:
            try:
                self._reserve(need)
            except Unavailable:
                self._drop(instance)
                raise
            instance.reserved = self._reservation

    def _drop(self, instance: Instance) -> None:
        """Forget one instance (already out of the idle stack): free it, release its memory."""
        instance.close()
        self._budget.release(instance.reserved)
        instance.reserved = 0
        self.compiled.release()

    # -- housekeeping ----------------------------------------------------------------

    @property
    def last_used(self) -> float:
        return self.stats.last_used

    @property
    def quarantined(self) -> bool:
        """Whether its calls run on the quarantine lane now."""
        return self._conduct.quarantined

    def evict_idle(self) -> bool:
        """Drop the least recently used idle instance (the budget needs room)."""
        try:
            instance = self._idle.pop(0)
        except IndexError:
            return False
        self.stats.evicted += 1
        self._events.evicted("budget")
        self._drop(instance)
        return True

    def expire_idle(self, now: float) -> int:
        """Drop instances idle for longer than ``pool.idleTimeout``; returns how many."""
        cutoff = now - self.spec.pool.idle_timeout
        dropped = 0
        idle = self._idle
        while idle and idle[0].idle_since < cutoff:
            try:
                instance = idle.pop(0)
            except IndexError:
                break
            self._drop(instance)
            dropped += 1
        if dropped:
            self._events.evicted("idle", dropped)
        return dropped

    def _drain_idle(self) -> None:
        while True:
            try:
                instance = self._idle.pop()
            except IndexError:
                return
            self._drop(instance)

    def close(self) -> None:
        """Drop idle instances; in-flight requests finish on theirs, which are not kept."""
        first = not self.closed
        self.closed = True
        self._drain_idle()
        self._budget.unregister(self)
        if first:
            self.compiled.let_go()

    def describe(self) -> dict[str, object]:
        return {
            "idle": len(self._idle),
            "busy": self._gate.busy,
            "maxRequests": self._max_requests,
            "waiting": self._gate.waiting,
            "coldStarts": self.stats.cold_starts,
            "served": self.stats.served,
            "renewed": self.stats.renewed,
            "discarded": self.stats.discarded,
            "evicted": self.stats.evicted,
            "inline": self._inline_now(),
            "demotions": self.stats.demotions,
            "quarantined": self._conduct.quarantined,
            "maxInstances": self.spec.pool.max_instances,
            "reuse": self.spec.pool.reuse,
        }
