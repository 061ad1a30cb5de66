"""Cluster mode: functions and routes from the ConfigMaps the operator writes.

:func:`watch_cluster` lists the namespace's ConfigMaps labelled
``edgerunner.dev/kind``, applies them to the catalog (which marks the runner
ready after this first full sync), then follows a watch from that list's
resourceVersion, re-applying after each burst of events.  Every
``resync`` seconds it lists again.  When the API server is unreachable it keeps
serving the last good configuration and retries with capped backoff; a 410
Gone restarts from a fresh list.  Parsed ConfigMaps are cached by
resourceVersion, so only what changed is decoded again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from typing import Any

import httpx

from edge_api.constants import LABEL_KIND
from edge_api.kube import KubeClient, KubeError, load_config, resource_path
from edge_api.wire import FunctionConfig, RouteConfig, WireError, parse_configmap
from edge_runner.invoke.catalog import Catalog, DesiredState, FunctionSource
from edge_runner.sources.registration import Registration

log = logging.getLogger("edge_runner.sources.cluster")

#: Seconds between full re-lists (a safety net under the watch).
RESYNC_SECONDS = 300.0
#: Seconds to wait after an event for more before applying (coalesces bursts).
DEBOUNCE_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 10.0

_Events = asyncio.Queue[dict[str, Any] | BaseException | None]


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
        for name in sorted(self.objects):
            parsed = self._parse(name, self.objects[name])
            origin = f"configmap/{name}"
            if isinstance(parsed, FunctionConfig):
                state.functions.append(
                    FunctionSource(parsed.name, parsed.spec, parsed.module, origin)
                )
            elif isinstance(parsed, RouteConfig):
                state.routes.append((parsed.name, parsed.spec))
            else:
                state.errors.append(f"{origin}: {parsed}")
        for stale in set(self._parsed) - set(self.objects):
            del self._parsed[stale]
        return state


def _namespace(option: str | None, client: KubeClient) -> str:
    return option or os.environ.get("POD_NAMESPACE") or client.config.namespace


async def watch_cluster(
    catalog: Catalog, stop: asyncio.Event, *, namespace: str | None,
    resync: float = RESYNC_SECONDS,
) -> None:
    client = KubeClient(load_config())
    ns = _namespace(namespace, client)
    path = resource_path("", "v1", "configmaps", ns)
    desired = _Desired()
    backoff = 0.5
    registration = Registration(kube=client, namespace=ns, catalog=catalog)
    heartbeat: asyncio.Task[None] | None = None
    log.info("watching configmaps in namespace %s", ns)
    try:
        while not stop.is_set():
            try:
                listing = await client.list(path, label_selector=LABEL_KIND)
                desired.replace_all(listing.get("items", []))
                await catalog.apply(desired.state())
                backoff = 0.5
                if heartbeat is None:
                    heartbeat = asyncio.create_task(registration.run(stop), name="heartbeat")
                await _follow(client, path, version=listing["metadata"]["resourceVersion"],
                              desired=desired, catalog=catalog, stop=stop,
                              deadline=time.monotonic() + resync)
            except (KubeError, httpx.HTTPError, OSError) as exc:
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
    client: KubeClient, path: str, *, version: str, desired: _Desired, catalog: Catalog,
    stop: asyncio.Event, deadline: float,
) -> None:
    """Watch from ``version`` until ``deadline``; returns to re-list (or raises)."""
    while not stop.is_set() and time.monotonic() < deadline:
        timeout = max(1, int(deadline - time.monotonic()))
        queue: _Events = asyncio.Queue()
        pumping = asyncio.create_task(_pump(client, path, version, timeout, queue))
        try:
            version = await _consume(queue, version, desired, catalog)
        finally:
            pumping.cancel()
            await asyncio.gather(pumping, return_exceptions=True)
        if not version:
            return


async def _pump(client: KubeClient, path: str, since: str, wait: int, queue: _Events) -> None:
    """Move watch events into ``queue``; ends with None, or with the exception."""
    try:
        async for event in client.watch(path, resource_version=since, label_selector=LABEL_KIND,
                                        timeout_seconds=wait):
            queue.put_nowait(event)
        queue.put_nowait(None)
    except Exception as exc:  # handed to the consumer, which re-raises it
        queue.put_nowait(exc)


async def _consume(
    queue: _Events, version: str,
    desired: _Desired, catalog: Catalog,
) -> str:
    """Apply events until the watch ends; returns the last version ("" = list again)."""
    pending = False
    while True:
        try:
            item = await asyncio.wait_for(queue.get(), DEBOUNCE_SECONDS if pending else None)
        except TimeoutError:
            await catalog.apply(desired.state())
            pending = False
            continue
        if item is None:
            break
        if isinstance(item, BaseException):
            raise item
        kind, obj = item["type"], item["object"]
        if kind == "ERROR":
            if obj.get("code") == 410:
                log.info("watch expired (410 Gone); listing again")
                return ""
            raise KubeError(int(obj.get("code", 500)), str(obj.get("reason", "")),
                            str(obj.get("message", "")))
        version = obj["metadata"].get("resourceVersion", version)
        if kind != "BOOKMARK":
            desired.apply_event(kind, obj)
            pending = True
    if pending:
        await catalog.apply(desired.state())
    return version
