"""Runs the data plane and the admin plane in one process and one event loop.

Called by the CLI (:mod:`edge_runner.cli`).  Builds the engine, the memory
budget (:mod:`edge_runner.invoke.budget`), the runner-wide thread gate, the catalog and
both ASGI apps (each behind :mod:`edge_runner.http.guard`), starts the
configuration source (a manifest folder, or the operator's ConfigMaps) and the
idle-instance sweeper, and owns graceful shutdown: on SIGTERM ``/readyz`` fails
first, then after ``drain_delay`` the data port stops accepting (idle
keep-alive connections are closed), in-flight requests get ``grace`` seconds to
finish, and the process exits.  Guests still running then are cancelled from
the client's point of view and stopped by their own deadline.

Worker threads (guests that outgrew the inline budget, and WAGI) and background
threads (compiling modules) run at a lower CPU priority (``worker_nice``) than
the event loop thread, and all of them ask for a short time slice
(``cpu_slice``), so guests burning CPU cannot delay request handling and inline
calls of healthy functions (see :mod:`edge_runner.host.cpusched`).  Worker
threads come in two lanes (:mod:`edge_runner.invoke.lanes`, docs/scheduling.md):
``shared`` (two per usable CPU) and ``quarantine`` (``SCHED_IDLE``), each behind
a gate that is fair between functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import time
from collections.abc import Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import uvicorn

from edge_runner.buildinfo import compiled_modules
from edge_runner.host.cgroups import read_cpu_limit
from edge_runner.host.cpusched import lower_priority, request_slice
from edge_runner.http.accesslog import AccessLog
from edge_runner.http.admin import Lifecycle, build_admin_app
from edge_runner.http.dataplane import DataPlane
from edge_runner.http.fastpath import fast_path_protocol
from edge_runner.http.guard import HttpLimits, guarded_protocol
from edge_runner.invoke.admission import FairGate
from edge_runner.invoke.budget import MemoryBudget
from edge_runner.invoke.catalog import Catalog
from edge_runner.invoke.lanes import QUARANTINE, Lane, QuarantinePolicy, idle_priority
from edge_runner.invoke.policy import InlinePolicy, QueuePolicy, SharedLimits
from edge_runner.metrics import RunnerMetrics
from edge_runner.settings import RunnerSettings
from edge_runner.sources.manifests import watch_folder
from edge_runner.wasm.engine import WasmEngine
from edge_runner.wasm.modcache import DiskCache

log = logging.getLogger("edge_runner.server")


def usable_cpus(root: Path) -> int:
    """CPUs this process may use, at least one: those it may run on (affinity), or
    fewer if its cgroup's CPU quota (a pod's ``limits.cpu``, rounded up) is smaller.

    The shared lane gets two worker threads per usable CPU, the quarantine lane four
    (docs/scheduling.md).  One per CPU was the rule while hostile guests spun on the
    shared threads: two of them on the event loop's one CPU took healthy p99 under
    attack from 1.4-1.9x to 3.6-3.8x of idle (bench/hostile.py).  Since such guests
    are quarantined at ``SCHED_IDLE``, a second thread per CPU no longer hurts the
    event loop there, and lets a thread-bound function such as WAGI keep its
    throughput beside them (bench/fairness.py).
    """
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = max(1, os.cpu_count() or 1)
    quota = read_cpu_limit(root)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn_config(app: Any, host: str, port: int, options: RunnerSettings) -> uvicorn.Config:
    limits = HttpLimits(
        max_head_bytes=options.max_head_bytes, max_headers=options.max_headers,
        head_timeout=options.head_timeout, body_timeout=options.body_timeout,
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,
        date_header=False,
        # The data plane answers most requests without an ASGI call (http/fastpath.py).
        http=fast_path_protocol(limits, app.answer_now) if isinstance(app, DataPlane)
        else guarded_protocol(limits),
        ws="none",
        loop="none",
        limit_concurrency=options.max_connections,
        timeout_keep_alive=math.ceil(options.keep_alive),
        timeout_graceful_shutdown=math.ceil(options.grace),
    )


def _bind_budget_metrics(metrics: RunnerMetrics, budget: MemoryBudget) -> None:
    gauge = metrics.memory_budget
    gauge.labels("limit").set(budget.limit)
    gauge.labels("baseline").set(budget.baseline)
    gauge.labels("usable").set(budget.usable)
    gauge.labels("reserved").set_function(lambda: budget.reserved)
    gauge.labels("headroom").set_function(lambda: budget.headroom)


async def _sweep_idle(catalog: Catalog, stop: asyncio.Event, every: float) -> None:
    """Drop instances idle past their function's pool.idleTimeout until ``stop``, and let
    the epoch timer rest when no guest ran since the last sweep (wasm/ticker.py)."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
        now = time.monotonic()
        for runtime in catalog.snapshot.functions.values():
            runtime.expire_idle(now)
        catalog.engine.rest_ticks()


def _quarantine_lane(options: RunnerSettings, cpus: int) -> Lane | None:
    """The quarantine lane's threads (at idle priority) and fair gate; None if disabled."""
    size = options.quarantine_threads
    if size is None:
        size = 4 * cpus
    if not size or not options.quarantine_strikes:
        return None
    executor = ThreadPoolExecutor(
        max_workers=size, thread_name_prefix="quarantine", initializer=idle_priority,
    )
    # One call at a time per quarantined function: each of its calls may spin until its
    # timeout, so its CPU use is bounded by the number of quarantined functions, not by
    # how many requests they get (docs/scheduling.md).
    return Lane(QUARANTINE, FairGate(size, options.max_queued, cap=1), executor)


def _disk_cache(folder: Path | None, engine: WasmEngine) -> DiskCache | None:
    if folder is None:
        return None
    try:
        return DiskCache(folder, engine.fingerprint)
    except OSError as exc:
        log.warning("module cache disabled: cannot use %s: %s", folder, exc)
        return None


async def serve(options: RunnerSettings) -> None:
    if request_slice(options.cpu_slice):  # first: the threads started later inherit it
        log.info("threads' time slice: %.1f ms", options.cpu_slice * 1e3)
    engine = WasmEngine()
    cpus = usable_cpus(options.cgroup_root)
    threads = options.max_concurrency or 2 * cpus
    executor = ThreadPoolExecutor(
        max_workers=threads, thread_name_prefix="wasm",
        initializer=lower_priority, initargs=(options.worker_nice,),
    )
    # Compiling modules and reading manifests is background work too (wasmtime's
    # compiler threads inherit the nice value of the thread that starts them).
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(
        thread_name_prefix="background",
        initializer=lower_priority, initargs=(options.worker_nice,),
    ))
    metrics = RunnerMetrics()
    compiled = compiled_modules()
    metrics.compiled_modules.set(len(compiled))
    log.info("data plane: %s", f"{len(compiled)} modules compiled (mypyc)" if compiled
             else "pure Python (the runner image compiles it: setup.py)")
    budget = MemoryBudget.detect(
        limit=options.memory_limit, default_limit=options.memory_default,
        fraction=options.memory_fraction, cgroup_root=options.cgroup_root,
    )
    _bind_budget_metrics(metrics, budget)
    quarantine = _quarantine_lane(options, cpus)
    catalog = Catalog(
        engine=engine,
        executor=executor,
        metrics=metrics,
        queue=QueuePolicy(max_waiting=options.max_waiting, max_wait=options.max_wait),
        inline=InlinePolicy(budget=options.inline_fuel),
        shared=SharedLimits(
            budget=budget,
            threads=FairGate.sized(threads, options.max_queued, share=options.max_thread_share),
            quarantine=quarantine,
        ),
        disk_cache=_disk_cache(options.cache_dir, engine),
        instance_max_requests=options.instance_max_requests,
        instance_renewal=options.instance_renewal,
        quarantine=QuarantinePolicy(strikes=options.quarantine_strikes,
                                    heavy_call=options.heavy_call),
    )
    lifecycle = Lifecycle()
    access_log = AccessLog(interval=options.access_log_interval,
                           dropped=metrics.access_log_dropped.inc)
    data_app = DataPlane(catalog, metrics, access_log)
    data = _Server(_uvicorn_config(data_app, options.host, options.port, options))
    admin = _Server(
        _uvicorn_config(
            build_admin_app(catalog, metrics, lifecycle),
            options.admin_host,
            options.admin_port,
            options,
        )
    )
    stop = asyncio.Event()
    # Everything built so far lives as long as the process: keep the cyclic garbage
    # collector from walking it again on every full collection (a several-ms pause
    # of the event loop, more frequent when failing guests create garbage).
    gc.collect()
    gc.freeze()

    async def shutdown() -> None:
        lifecycle.shutting_down = True
        log.info("shutting down: readiness off, draining for %.1fs", options.drain_delay)
        await asyncio.sleep(options.drain_delay)
        data.should_exit = True
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(shutdown()))

    source = asyncio.create_task(_source(options, catalog, stop), name="config-source")
    sweeper = asyncio.create_task(_sweep_idle(catalog, stop, options.idle_sweep), name="sweeper")
    admin_task = asyncio.create_task(admin.serve(), name="admin")
    try:
        await data.serve()
    finally:
        stop.set()
        source.cancel()
        admin.should_exit = True
        await asyncio.gather(source, sweeper, admin_task, return_exceptions=True)
        # Guests still on threads stop by their own deadline, which needs the ticker.
        await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        if quarantine is not None:
            await asyncio.to_thread(quarantine.executor.shutdown, wait=True,
                                    cancel_futures=True)
        engine.close()
        access_log.close()  # every line still waiting
        log.info("stopped")


def _source(
    options: RunnerSettings, catalog: Catalog, stop: asyncio.Event
) -> Coroutine[Any, Any, None]:
    if options.manifests is not None:
        return watch_folder(options.manifests, catalog, stop)
    from edge_runner.sources.cluster import watch_cluster

    return watch_cluster(catalog, stop, namespace=options.namespace, runner_id=options.pod_name,
                         lease_seconds=options.lease_seconds,
                         blob_dir=options.cache_dir / "blobs" if options.cache_dir else None)
