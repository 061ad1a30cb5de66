"""The runner's parts in process: a real engine and real modules, no uvicorn.

For tests of :mod:`edge_runner.invoke.pool`, :mod:`edge_runner.invoke.catalog` and
:mod:`edge_runner.http.dataplane` that should point at their cause when they fail:

* builders for specs, routes, function sources and routed requests;
* :class:`RecordingExecutor` (which calls went to a worker thread) and
  :class:`RecordingEvents` (what the pool reported for metrics);
* :class:`FakeClock`, swapped in for the pool's ``time`` module so that inline
  demotions, backoffs and idle expiry are judged on a clock the test moves;
* :func:`asgi_call`: one raw ASGI request with a ``receive`` that records (or
  refuses) every call, for what an HTTP client cannot show (was the body read?
  what exactly was sent for HEAD?);
* for :mod:`edge_runner.invoke.lanes` (fair sharing of worker threads and the
  quarantine): :func:`lanes` (a shared lane and a quarantine lane with its own
  recording executor), :class:`LaneEvents`, :class:`FakeCpu` (a clock whose
  ``thread_time`` says how long each call computed) and :func:`completion_order`.

Guests come from :mod:`support.guests`; :func:`fuel_wat` and :func:`trap_if_big_wat`
are the ones added here.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from edge_api.models import EdgeFunctionSpec, EdgeRouteSpec
from edge_runner.abi import HttpRequest
from edge_runner.errors import InvocationError
from edge_runner.http.dataplane import DataPlane
from edge_runner.invoke.admission import FairGate, Gate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.catalog import Catalog, DesiredState, FunctionSource
from edge_runner.invoke.lanes import QUARANTINE, Lane
from edge_runner.invoke.policy import Clock, InlinePolicy, PoolEvents, QueuePolicy, SharedLimits
from edge_runner.invoke.pool import FunctionRuntime
from edge_runner.metrics import RunnerMetrics
from edge_runner.wasm.engine import WasmEngine
from support.guests import constant_wat
from support.wasm import wat_to_wasm

MiB = 2**20
#: Linear memory of the guests of :mod:`support.guests` (``(memory 4)``): what an idle
#: instance of one keeps reserved in the memory budget.
GUEST_MEMORY = 4 * 65536
PROBLEM_BASE = "https://edgerunner.dev/problems/"

P = ParamSpec("P")
T = TypeVar("T")


# -- guests -------------------------------------------------------------------------------


def fuel_wat(per_byte: int = 64) -> str:
    """Answers ``done`` after a loop of ``per_byte`` iterations per byte of the request
    envelope (about 8 fuel each): a small request fits a small inline budget, a request
    with a body of a few KiB needs far more."""
    return constant_wat(b"done", extra="(global $left (mut i32) (i32.const 0))",
                        handle_prefix=f"""
    (global.set $left (i32.mul (local.get 1) (i32.const {per_byte})))
    (block $done (loop $more
      (br_if $done (i32.eqz (global.get $left)))
      (global.set $left (i32.sub (global.get $left) (i32.const 1)))
      (br $more)))""")


def trap_if_big_wat(limit: int = 1000) -> str:
    """Answers ``ok``, but traps when the request envelope is over ``limit`` bytes: a
    function that fails or behaves as its callers choose."""
    return constant_wat(b"ok", handle_prefix=f"""
    (if (i32.gt_u (local.get 1) (i32.const {limit})) (then unreachable))""")


def wasm_of(module: str | bytes) -> bytes:
    return wat_to_wasm(module) if isinstance(module, str) else module


# -- specs and requests ---------------------------------------------------------------------


def function_spec(
    *, abi: str = "edge", limits: dict[str, object] | None = None,
    pool: dict[str, object] | None = None, env: dict[str, str] | None = None,
) -> EdgeFunctionSpec:
    """A spec as a manifest would give it (camelCase keys, quantities as strings)."""
    return EdgeFunctionSpec.model_validate({
        "source": {"path": "module.wasm"}, "abi": abi, "limits": limits or {},
        "pool": pool or {}, "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    })


def route(
    name: str, path: str, function: str, *, path_type: str = "Exact",
    methods: Sequence[str] = (),
) -> tuple[str, EdgeRouteSpec]:
    return name, EdgeRouteSpec.model_validate({"rules": [{
        "match": {"path": path, "pathType": path_type, "methods": list(methods)},
        "function": function,
    }]})


def source(name: str, module: str | bytes, **spec: Any) -> FunctionSource:
    """A function as a source describes it: ``module`` is WAT text or module bytes."""
    return FunctionSource(name, function_spec(**spec), wasm_of(module), f"test:{name}")


def http_request(
    path: str = "/", *, method: str = "GET", body: bytes = b"", query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (), params: tuple[tuple[str, str], ...] = (),
    request_id: str = "test-request",
) -> HttpRequest:
    """A routed request as the data plane hands it to a pool."""
    return HttpRequest(
        method=method, path=path, raw_path=path.encode(), query=query,
        headers=[*headers, (b"x-request-id", request_id.encode())], body=body,
        host="edge.test", scheme="http", client="127.0.0.1", server_port=8080,
        route_path=path, params=params, request_id=request_id,
    )


# -- pools ----------------------------------------------------------------------------------


class RecordingExecutor(ThreadPoolExecutor):
    """A worker-thread executor that counts what it was given: calls that left the loop."""

    def __init__(self, max_workers: int = 4) -> None:
        super().__init__(max_workers=max_workers, thread_name_prefix="test-wasm")
        self.submitted = 0

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@contextmanager
def worker_threads(max_workers: int = 4) -> Iterator[RecordingExecutor]:
    executor = RecordingExecutor(max_workers)
    try:
        yield executor
    finally:
        executor.shutdown(wait=True)


@contextmanager
def wasm_engine() -> Iterator[WasmEngine]:
    engine = WasmEngine()
    try:
        yield engine
    finally:
        engine.close()


@dataclass
class RecordingEvents(PoolEvents):
    """What a pool reported: cold starts (seconds, None = not timed) and evictions by cause."""

    cold_starts: list[float | None] = field(default_factory=list)
    evictions: collections.Counter[str] = field(default_factory=collections.Counter)

    def cold_start(self, seconds: float | None) -> None:
        self.cold_starts.append(seconds)

    def evicted(self, cause: str, count: int = 1) -> None:
        self.evictions[cause] += count


class FakeClock:
    """Stands in for the ``time`` module of :mod:`edge_runner.invoke.pool`.

    ``monotonic()`` returns :attr:`now`, first advanced by :attr:`step` (so with a
    step every interval the pool measures lasts at least ``step``; with 0, none
    lasts at all).  CPU and performance counters stay real.
    """

    thread_time = staticmethod(time.thread_time)
    perf_counter = staticmethod(time.perf_counter)

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.step = 0.0

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


@dataclass
class Pools:
    """Builds runtimes of one engine and one executor (per test)."""

    engine: WasmEngine
    executor: RecordingExecutor
    #: The clocks of the runtimes it builds (a :class:`FakeClock` in tests of timing).
    clock: Clock = time

    def runtime(
        self, module: str | bytes, *, name: str = "fn", abi: str = "edge",
        limits: dict[str, object] | None = None, pool: dict[str, object] | None = None,
        queue: QueuePolicy | None = None, inline: InlinePolicy | None = None,
        events: PoolEvents | None = None, shared: SharedLimits | None = None,
        max_requests: int = 0, env: dict[str, str] | None = None, renew: bool = True,
    ) -> FunctionRuntime:
        spec = function_spec(abi=abi, limits=limits, pool=pool, env=env)
        return FunctionRuntime(
            name=name, spec=spec, compiled=self.engine.compile(wasm_of(module), abi),
            engine=self.engine, executor=self.executor, queue=queue or QueuePolicy(),
            inline=inline or InlinePolicy(), events=events, max_requests=max_requests,
            renew=renew, shared=shared, clock=self.clock,
        )


async def body_of(runtime: FunctionRuntime, request: HttpRequest | None = None) -> bytes:
    """Invoke and return the body of a 200 response."""
    status, _, body = await runtime.invoke(request or http_request())
    assert status == 200, (status, body)
    return body


def count_of(body: bytes) -> int:
    """The counter of :func:`support.guests.counter_wat` from its response body."""
    return int.from_bytes(body, "little")


async def counts(runtime: FunctionRuntime, times: int) -> list[int]:
    """The counters of ``times`` requests in a row to a :func:`~support.guests.counter_wat`."""
    return [count_of(await body_of(runtime)) for _ in range(times)]


async def failure(runtime: FunctionRuntime, request: HttpRequest | None = None
                  ) -> InvocationError:
    """Invoke, expecting an invocation error; returns it."""
    try:
        response = await runtime.invoke(request or http_request())
    except InvocationError as error:
        return error
    raise AssertionError(f"expected an invocation error, got {response[0]}")


def budget_of(usable: int = 256 * MiB) -> tuple[MemoryBudget, SharedLimits]:
    """A memory budget of exactly ``usable`` bytes, and shared limits around it."""
    budget = MemoryBudget(limit=usable, fraction=1.0, baseline=0, source="test")
    return budget, SharedLimits(budget=budget, threads=Gate(8, 64))


# -- catalogs and the data plane ---------------------------------------------------------


def new_catalog(
    engine: WasmEngine, executor: RecordingExecutor, *, shared: SharedLimits | None = None,
    inline: InlinePolicy | None = None, queue: QueuePolicy | None = None,
) -> Catalog:
    """A catalog with its own metrics registry (build it inside the test's event loop)."""
    return Catalog(engine=engine, executor=executor, metrics=RunnerMetrics(), shared=shared,
                   inline=inline, queue=queue)


def metric(catalog: Catalog, name: str, **labels: str) -> float:
    """A sample of the catalog's registry; 0 when it was never set."""
    value = catalog.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


@asynccontextmanager
async def serving(
    engine: WasmEngine, executor: RecordingExecutor, functions: Sequence[FunctionSource],
    routes: Sequence[tuple[str, EdgeRouteSpec]], *, shared: SharedLimits | None = None,
) -> AsyncIterator[tuple[DataPlane, Catalog]]:
    """A data plane over a catalog loaded with ``functions`` and ``routes``."""
    catalog = new_catalog(engine, executor, shared=shared)
    await catalog.apply(DesiredState(list(functions), list(routes)))
    try:
        yield DataPlane(catalog, catalog.metrics), catalog
    finally:
        for runtime in catalog.snapshot.functions.values():
            runtime.close()


# -- ASGI -----------------------------------------------------------------------------------

Message = MutableMapping[str, Any]
App = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Message]],
     Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]


@dataclass
class AsgiResult:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    #: How many times the app called ``receive()``.
    received: int
    #: Everything the app sent, in order.
    sent: list[Message]

    def header(self, name: bytes) -> list[bytes]:
        return [v for n, v in self.headers if n == name]

    def problem(self) -> dict[str, Any]:
        assert self.header(b"content-type") == [b"application/problem+json"], self.headers
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


async def asgi_call(
    app: App, path: str, *, method: str = "GET", query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = ((b"host", b"edge.test"),),
    chunks: Sequence[bytes] = (b"",), raw_path: bytes | None = None,
    refuse_receive: bool = False, disconnect: bool = False,
) -> AsgiResult:
    """One HTTP request straight into ``app``.

    The body arrives as ``chunks`` (``more_body`` on all but the last); after them
    ``receive()`` reports a disconnect.  ``refuse_receive``: any ``receive()`` call is
    recorded and fails.  ``disconnect``: the first ``receive()`` is a disconnect.
    """
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode(),
        "query_string": query, "root_path": "", "headers": list(headers),
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8080),
    }
    pending = list(chunks)
    received = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal received
        received += 1
        if refuse_receive:
            raise AssertionError("the app read the request body")
        if disconnect or not pending:
            return {"type": "http.disconnect"}
        chunk = pending.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = [m for m in sent if m["type"] == "http.response.start"]
    assert len(start) == 1, sent
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return AsgiResult(start[0]["status"], list(start[0]["headers"]), body, received, sent)


# -- lanes of worker threads and the quarantine ----------------------------------------


@contextmanager
def lanes(shared: int = 1, quarantine: int = 1, *, max_waiting: int = 64, share: float = 1.0
          ) -> Iterator[tuple[SharedLimits, RecordingExecutor]]:
    """Shared limits with fair gates for ``shared`` worker threads (the runtimes' own
    executor) and a quarantine lane of ``quarantine`` threads, whose executor is
    yielded too; no memory budget."""
    with worker_threads(quarantine) as executor:
        yield SharedLimits(
            budget=MemoryBudget.unlimited(),
            threads=FairGate.sized(shared, max_waiting, share=share),
            quarantine=Lane(QUARANTINE, FairGate.sized(quarantine, max_waiting, share=share),
                            executor),
        ), executor


@dataclass
class LaneEvents(RecordingEvents):
    """:class:`RecordingEvents` plus waits for a worker thread (lane, seconds) and moves to
    (True) and from (False) the quarantine lane."""

    waits: list[tuple[str, float]] = field(default_factory=list)
    quarantines: list[bool] = field(default_factory=list)

    def thread_wait(self, lane: str, seconds: float) -> None:
        self.waits.append((lane, seconds))

    def quarantined(self, entered: bool) -> None:
        self.quarantines.append(entered)

    def lanes(self) -> list[str]:
        """The lane of each call that ran on a worker thread, in order."""
        return [lane for lane, _ in self.waits]


class FakeCpu(FakeClock):
    """A :class:`FakeClock` whose ``thread_time()`` advances :attr:`cpu_step` at every
    read, so a call on a worker thread (read before and after) computed exactly
    ``cpu_step`` seconds, however long it really took."""

    def __init__(self, now: float = 1000.0) -> None:
        super().__init__(now)
        self.cpu_step = 0.0
        self._cpu = 0.0
        self._lock = threading.Lock()

    def thread_time(self) -> float:
        with self._lock:
            self._cpu += self.cpu_step
            return self._cpu


async def completion_order(calls: Sequence[tuple[str, Callable[[], Awaitable[object]]]]
                           ) -> list[str]:
    """Start every call at once, in order; the labels in the order they finished."""
    order: list[str] = []

    async def one(label: str, call: Callable[[], Awaitable[object]]) -> None:
        await call()
        order.append(label)

    await asyncio.gather(*(one(label, call) for label, call in calls))
    return order
