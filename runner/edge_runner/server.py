"""Runs the data plane and the admin plane in one process and one event loop.

Called by the CLI (:mod:`edge_runner.cli`).  Builds the engine, the catalog and
both ASGI apps, starts the configuration source (a manifest folder, or the
operator's ConfigMaps), and owns graceful shutdown: on SIGTERM ``/readyz``
fails first, then after ``drain_delay`` the data port stops accepting, in-flight
requests get ``grace`` seconds to finish, and the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from edge_runner.admin import Lifecycle, build_admin_app
from edge_runner.catalog import Catalog
from edge_runner.dataplane import DataPlane
from edge_runner.engine import WasmEngine
from edge_runner.manifests import watch_folder
from edge_runner.metrics import RunnerMetrics
from edge_runner.pool import InlinePolicy, QueuePolicy

log = logging.getLogger("edge_runner.server")


@dataclass(frozen=True)
class ServeOptions:
    """Everything ``edge-runner serve`` can be told."""

    #: Folder of manifests (standalone mode); None = cluster mode.
    manifests: Path | None = None
    host: str = "0.0.0.0"
    port: int = 8080
    admin_host: str = "0.0.0.0"
    admin_port: int = 9090
    #: Guest invocations running at once across all functions (worker threads).
    max_concurrency: int = 32
    #: Requests that may wait per function when its instances are all busy.
    max_waiting: int = 64
    #: Seconds a request may wait for a free instance before 503.
    max_wait: float = 1.0
    #: Seconds between failing /readyz and closing the data port on SIGTERM
    #: (time for endpoints to be removed from Services).
    drain_delay: float = 0.0
    #: Seconds in-flight requests get to finish after the data port closes.
    grace: float = 25.0
    #: Slow clients: seconds an idle keep-alive connection stays open.
    keep_alive: float = 5.0
    #: Fuel a call may use on the event loop before it is moved to a thread (0 = never).
    inline_fuel: int = 1_000_000
    #: Namespace to watch in cluster mode (default: the pod's own).
    namespace: str | None = None


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def _uvicorn_config(app: Any, host: str, port: int, options: ServeOptions) -> uvicorn.Config:
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
        http="httptools",
        loop="none",
        timeout_keep_alive=int(options.keep_alive),
        timeout_graceful_shutdown=int(options.grace),
        h11_max_incomplete_event_size=16 * 1024,
    )


async def serve(options: ServeOptions) -> None:
    engine = WasmEngine()
    executor = ThreadPoolExecutor(max_workers=options.max_concurrency, thread_name_prefix="wasm")
    metrics = RunnerMetrics()
    catalog = Catalog(
        engine=engine,
        executor=executor,
        metrics=metrics,
        queue=QueuePolicy(max_waiting=options.max_waiting, max_wait=options.max_wait),
        inline=InlinePolicy(budget=options.inline_fuel),
    )
    lifecycle = Lifecycle()
    data_app = DataPlane(catalog, metrics)
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
    admin_task = asyncio.create_task(admin.serve(), name="admin")
    try:
        await data.serve()
    finally:
        source.cancel()
        admin.should_exit = True
        await asyncio.gather(source, admin_task, return_exceptions=True)
        executor.shutdown(wait=False, cancel_futures=True)
        engine.close()
        log.info("stopped")


def _source(
    options: ServeOptions, catalog: Catalog, stop: asyncio.Event
) -> Coroutine[Any, Any, None]:
    if options.manifests is not None:
        return watch_folder(options.manifests, catalog, stop)
    from edge_runner.cluster import watch_cluster

    return watch_cluster(catalog, stop, namespace=options.namespace)
