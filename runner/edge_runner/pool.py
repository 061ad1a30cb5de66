"""A loaded function and its pool of instances.

:class:`FunctionRuntime` is what the catalog (:mod:`edge_runner.catalog`) keeps
per function: the spec, the compiled module and the instances.  The data plane
calls :meth:`FunctionRuntime.invoke`, which waits for a concurrency slot (at
most ``pool.maxInstances`` at once, a bounded queue with a bounded wait), then
runs the guest in a worker thread so a slow guest never blocks the event loop.

With ``pool.reuse`` an instance that served a request successfully goes back
to the idle stack (most recently used first, so the hottest stay warm) and its
globals persist; an instance that failed in any way is dropped.  Without reuse
every request gets a fresh instance from the pre-instantiated template.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from edge_api.models import EdgeFunctionSpec
from edge_runner.abi_edge import BudgetExceeded, EdgeInstance, Response
from edge_runner.abi_wagi import CgiRequest, run_wagi
from edge_runner.engine import CompiledModule, WasmEngine
from edge_runner.errors import Unavailable

log = logging.getLogger("edge_runner.pool")


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    """How requests wait for a concurrency slot of a function."""

    #: Requests allowed to wait per function once all its instances are busy.
    max_waiting: int = 64
    #: Seconds a request may wait for a slot before it gets 503.
    max_wait: float = 1.0


@dataclass(frozen=True, slots=True)
class InlinePolicy:
    """Speculative inline execution of edge calls on the event loop thread.

    Handing a call to a worker thread and back costs ~100 us of thread wake-ups
    on a small VM, several times the call itself (~16 us for a small guest).
    So a call first runs on the event loop with a small fuel budget; a guest
    that needs more is stopped there (bounded stall: ``budget`` instructions),
    its instance discarded, the request re-run from scratch on a worker thread
    with the function's full limits, and the function stays on threads for
    ``backoff`` seconds.  Re-running is safe: a guest has no side effects outside
    its own instance, which is thrown away.
    """

    #: Wasm fuel (roughly instructions) a call may use inline; 0 = never inline.
    budget: int = 1_000_000
    #: Seconds a function that exceeded the budget runs on threads only.
    backoff: float = 30.0


@dataclass(slots=True)
class PoolStats:
    cold_starts: int = 0
    busy: int = 0
    waiting: int = 0
    discarded: int = 0
    served: int = 0
    demotions: int = 0
    last_used: float = field(default_factory=time.monotonic)


class FunctionRuntime:
    """One version (digest + spec) of one function, with its instances."""

    def __init__(
        self,
        *,
        name: str,
        spec: EdgeFunctionSpec,
        compiled: CompiledModule,
        engine: WasmEngine,
        executor: Executor,
        queue: QueuePolicy,
        inline: InlinePolicy = InlinePolicy(),
        on_cold_start: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.compiled = compiled
        self.digest = compiled.digest
        self.engine = engine
        self._executor = executor
        self._queue = queue
        self._on_cold_start = on_cold_start
        self._inline = inline
        self._inline_after = 0.0
        self._slots = asyncio.Semaphore(spec.pool.max_instances)
        self._idle: list[EdgeInstance] = []
        self.stats = PoolStats()
        self.closed = False

    # -- what the data plane calls -------------------------------------------------

    async def invoke_edge(self, envelope: bytes, request_id: str) -> Response:
        async with self._slot():
            inline = self._inline
            if inline.budget and time.monotonic() >= self._inline_after:
                try:
                    return self._run_edge(envelope, request_id, inline.budget)
                except BudgetExceeded:
                    self._inline_after = time.monotonic() + inline.backoff
                    self.stats.demotions += 1
                    log.info("%s needs more than the inline budget; running it on threads",
                             self.name, extra={"function": self.name})
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._run_edge, envelope, request_id, 0
            )

    async def invoke_wagi(self, request: CgiRequest, request_id: str) -> Response:
        async with self._slot():
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._run_wagi, request, request_id
            )

    def _slot(self) -> _Slot:
        return _Slot(self)

    async def acquire_slot(self) -> None:
        """Wait (bounded) for a concurrency slot; raises Unavailable."""
        stats = self.stats
        if self._slots.locked():
            if stats.waiting >= self._queue.max_waiting:
                raise Unavailable(
                    "concurrency", f"{self.name}: all instances busy and the queue is full"
                )
            stats.waiting += 1
            try:
                await asyncio.wait_for(self._slots.acquire(), self._queue.max_wait)
            except TimeoutError as exc:
                raise Unavailable(
                    "concurrency",
                    f"{self.name}: no instance became free within {self._queue.max_wait}s",
                ) from exc
            finally:
                stats.waiting -= 1
        else:
            await self._slots.acquire()
        stats.busy += 1

    def release_slot(self) -> None:
        self.stats.busy -= 1
        self.stats.last_used = time.monotonic()
        self._slots.release()

    # -- worker-thread side ----------------------------------------------------------

    def _run_edge(self, envelope: bytes, request_id: str, budget: int) -> Response:
        reuse = self.spec.pool.reuse
        instance = self._idle.pop() if (reuse and self._idle) else self._new_instance()
        try:
            response = instance.invoke(envelope, request_id, budget=budget)
        except BaseException:
            self.stats.discarded += 1
            raise
        self.stats.served += 1
        if reuse and not self.closed:
            self._idle.append(instance)
        return response

    def _run_wagi(self, request: CgiRequest, request_id: str) -> Response:
        self.stats.cold_starts += 1
        self._on_cold_start()
        response = run_wagi(
            engine=self.engine,
            compiled=self.compiled,
            name=self.name,
            spec=self.spec,
            request=request,
            request_id=request_id,
        )
        self.stats.served += 1
        return response

    def _new_instance(self) -> EdgeInstance:
        self.stats.cold_starts += 1
        self._on_cold_start()
        return EdgeInstance(self.engine, self.compiled, self.name, self.spec)

    # -- housekeeping ----------------------------------------------------------------

    def idle_count(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Drop idle instances; in-flight requests finish on theirs, which are not kept."""
        self.closed = True
        self._idle.clear()

    def describe(self) -> dict[str, object]:
        return {
            "idle": len(self._idle),
            "busy": self.stats.busy,
            "waiting": self.stats.waiting,
            "coldStarts": self.stats.cold_starts,
            "served": self.stats.served,
            "discarded": self.stats.discarded,
            "inline": time.monotonic() >= self._inline_after and self._inline.budget > 0,
            "maxInstances": self.spec.pool.max_instances,
            "reuse": self.spec.pool.reuse,
        }


class _Slot:
    __slots__ = ("_runtime",)

    def __init__(self, runtime: FunctionRuntime) -> None:
        self._runtime = runtime

    async def __aenter__(self) -> None:
        await self._runtime.acquire_slot()

    async def __aexit__(self, *exc: object) -> None:
        self._runtime.release_slot()
