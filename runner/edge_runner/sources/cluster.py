"""Cluster mode: functions and routes from the ConfigMaps the operator writes.

:func:`watch_cluster` lists the namespace's ConfigMaps labelled
``edgerunner.dev/kind`` (a lightkube client from :mod:`edge_api.k8s`), applies
them to the catalog (which marks the runner ready after this first full sync),
then follows a watch from that list's resourceVersion, re-applying after each
burst of events.  A function a route names that has no ConfigMap yet is
reported as not loaded (503, retry) unless the route's ConfigMap says the
operator found no such EdgeFunction (then requests get a final 500).  Every
``resync`` seconds it lists again.  When the API server is unreachable it keeps
serving the last good configuration and retries with capped backoff; a 410
Gone restarts from a fresh list.  Parsed ConfigMaps are cached by
resourceVersion, so only what changed is decoded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from lightkube import AsyncClient
from lightkube.core.client import LabelSelector
from lightkube.operators import exists
from lightkube.resources.core_v1 import ConfigMap

from edge_api.abi import ModuleRejected, check_binary
from edge_api.constants import LABEL_KIND
from edge_api.k8s import KUBE_ERRORS, async_client, status_code
from edge_api.routing import by_age
from edge_api.wire import FunctionConfig, RouteConfig, WireError, parse_configmap
from edge_runner.invoke.catalog import Catalog, DesiredState, FunctionSource
from edge_runner.sources.registration import FIELD_MANAGER, Registration

log = logging.getLogger("edge_runner.sources.cluster")

#: Seconds between full re-lists (a safety net under the watch).
RESYNC_SECONDS = 300.0
#: Seconds to wait after an event for more before applying (coalesces bursts).
DEBOUNCE_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 10.0
#: Longest single watch request (the server ends it; the client opens the next).
WATCH_SECONDS = 300

_Events = asyncio.Queue[tuple[str, dict[str, Any]] | BaseException | None]
#: Only ConfigMaps the operator labelled.
_SELECTOR: LabelSelector = {LABEL_KIND: exists()}


class _Desired:
    """The ConfigMaps seen so far, parsed once per resourceVersion."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self._parsed: dict[str, tuple[str, FunctionConfig | RouteConfig | WireError]] = {}

    def replace_all(self, items: list[dict[str, Any]]) -> None:
        self.objects = {item["metadata"]["name"]: item for item in items}

    def apply_event(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if kind == "DELETED":
            self.objects.pop(name, None)
        else:
            self.objects[name] = obj

    def _parse(self, name: str, obj: dict[str, Any]) -> FunctionConfig | RouteConfig | WireError:
        version = obj["metadata"].get("resourceVersion", "")
        cached = self._parsed.get(name)
        if cached is not None and cached[0] == version:
            return cached[1]
        try:
            parsed: FunctionConfig | RouteConfig | WireError = parse_configmap(obj)
        except WireError as exc:
            parsed = exc
        self._parsed[name] = (version, parsed)
        return parsed

    def state(self) -> DesiredState:
        state = DesiredState()
        routes: list[tuple[str, RouteConfig]] = []
        for name in sorted(self.objects):
            parsed = self._parse(name, self.objects[name])
            origin = f"configmap/{name}"
            if isinstance(parsed, FunctionConfig):
                state.functions.append(_function_source(parsed, origin))
            elif isinstance(parsed, RouteConfig):
                routes.append((origin, parsed))
            else:
                state.errors.append(f"{origin}: {parsed}")
        # Oldest first: of two conflicting rules the older route's is served.
        state.routes.extend(by_age([(r.name, r.spec, r.created) for _origin, r in routes]))
        state.functions.extend(_pending(routes, {f.name for f in state.functions}))
        for stale in set(self._parsed) - set(self.objects):
            del self._parsed[stale]
        return state


def _function_source(config: FunctionConfig, origin: str) -> FunctionSource:
    try:
        check_binary(config.module)
    except ModuleRejected as exc:
        return FunctionSource(config.name, config.spec, None, origin,
                              f"{origin}: {exc.reason}: {exc}")
    return FunctionSource(config.name, config.spec, config.module, origin)


def _pending(routes: list[tuple[str, RouteConfig]], published: set[str]
             ) -> list[FunctionSource]:
    """Functions that routes name, that are not published, and that the operator did not
    say are missing: they exist but their ConfigMap has not arrived (yet), so requests
    for them get 503 with Retry-After.  Functions the operator said are missing get no
    entry: their requests get a final 500 (:mod:`edge_runner.http.dataplane`)."""
    pending: dict[str, FunctionSource] = {}
    for origin, route in routes:
        for function in route.spec.function_names():
            if function in published or function in pending or (
                    route.missing is not None and function in route.missing):
                continue
            pending[function] = FunctionSource(
                function, None, None, origin,
                f"{origin}: function {function} is not published by the operator yet")
    return list(pending.values())


def _namespace(option: str | None, client: AsyncClient) -> str:
    return option or str(client.namespace)


async def watch_cluster(
    catalog: Catalog, stop: asyncio.Event, *, namespace: str | None,
    runner_id: str | None = None, lease_seconds: int | None = None,
    resync: float = RESYNC_SECONDS,
) -> None:
    client = async_client(field_manager=FIELD_MANAGER)
    ns = _namespace(namespace, client)
    desired = _Desired()
    backoff = 0.5
    registration = Registration(kube=client, namespace=ns, catalog=catalog,
                                runner_id=runner_id, duration=lease_seconds)
    heartbeat: asyncio.Task[None] | None = None
    log.info("watching configmaps in namespace %s", ns)
    try:
        while not stop.is_set():
            try:
                listing = client.list(ConfigMap, namespace=ns, labels=_SELECTOR)
                desired.replace_all([item.to_dict() async for item in listing])
                await catalog.apply(desired.state())
                backoff = 0.5
                if heartbeat is None:
                    heartbeat = asyncio.create_task(registration.run(stop), name="heartbeat")
                await _follow(client, ns, version=listing.resourceVersion, desired=desired,
                              catalog=catalog, deadline=time.monotonic() + resync)
            except KUBE_ERRORS as exc:
                log.warning("API server unreachable or failing (%s); serving the last good"
                            " configuration, retrying in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    finally:
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        await client.close()


async def _follow(
    client: AsyncClient, namespace: str, *, version: str, desired: _Desired, catalog: Catalog,
    deadline: float,
) -> None:
    """Watch from ``version`` until ``deadline`` or a 410 Gone; returns to re-list (or raises)."""
    queue: _Events = asyncio.Queue()
    pumping = asyncio.create_task(_pump(client, namespace, version, queue))
    try:
        await _consume(queue, desired, catalog, deadline)
    finally:
        pumping.cancel()
        await asyncio.gather(pumping, return_exceptions=True)


async def _pump(client: AsyncClient, namespace: str, since: str, queue: _Events) -> None:
    """Move watch events into ``queue``; ends with None, or with the exception.

    lightkube opens the next watch request from the last resourceVersion seen
    when the server ends one, so this runs until cancelled or an error.
    """
    try:
        async for kind, obj in client.watch(ConfigMap, namespace=namespace, labels=_SELECTOR,
                                            resource_version=since,
                                            server_timeout=WATCH_SECONDS):
            queue.put_nowait((kind, obj.to_dict()))
        queue.put_nowait(None)
    except Exception as exc:  # handed to the consumer, which re-raises it
        queue.put_nowait(exc)


async def _consume(queue: _Events, desired: _Desired, catalog: Catalog, deadline: float) -> None:
    """Apply events until ``deadline``, the end of the watch or a 410 Gone."""
    pending = False
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            item = await asyncio.wait_for(queue.get(),
                                          min(DEBOUNCE_SECONDS, left) if pending else left)
        except TimeoutError:
            if pending:
                await catalog.apply(desired.state())
                pending = False
            continue
        if item is None:
            break
        if isinstance(item, BaseException):
            if status_code(item) == 410:
                log.info("watch expired (410 Gone); listing again")
                break
            raise item
        kind, obj = item
        if kind != "BOOKMARK":
            desired.apply_event(kind, obj)
            pending = True
    if pending:
        await catalog.apply(desired.state())
