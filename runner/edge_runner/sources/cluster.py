"""Cluster mode: functions and routes from the ConfigMaps the operator writes.

:func:`watch_cluster` lists the namespace's ConfigMaps labelled
``edgerunner.dev/kind`` (a lightkube client from :mod:`edge_api.k8s`) and the
EdgeFunctions and EdgeRoutes whose ``status.handoff`` confirms them
(:mod:`edge_runner.sources.handoff`: a ConfigMap the operator did not publish is
never served), adds the Secrets they name (:mod:`edge_runner.sources.cluster_secrets`),
applies them to the catalog (which marks the runner ready after this first full sync),
then follows a watch from that list's resourceVersion, re-applying after a
change (coalescing what comes with it, :func:`_consume`; owner events that
leave ``status.handoff`` as it was are not applied).  A
function a route names that has no ConfigMap yet is reported as not loaded
(503, retry) unless the route's ConfigMap says the operator found no such
EdgeFunction (then requests get a final 500).  Every
``resync`` seconds it lists again.  When the API server is unreachable it keeps
serving the last good configuration and retries with capped backoff; a 410
Gone restarts from a fresh list.  Parsed ConfigMaps are cached by
resourceVersion, so only what changed is decoded again.  Modules published by
reference come from :mod:`edge_runner.sources.artifacts` (fetched in the
background; the catalog is applied again when one arrives).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from lightkube import AsyncClient
from lightkube.core.client import LabelSelector
from lightkube.operators import exists
from lightkube.resources.core_v1 import ConfigMap

from edge_api.abi import ModuleRejected, check_binary
from edge_api.constants import LABEL_KIND
from edge_api.k8s import (
    KUBE_ERRORS,
    EdgeFunctionResource,
    EdgeRouteResource,
    async_client,
    status_code,
)
from edge_api.routing import by_age
from edge_api.wire import FunctionConfig, RouteConfig, WireError, parse_configmap
from edge_runner.invoke.catalog import Catalog, DesiredState, FunctionSource
from edge_runner.sources.artifacts import Artifacts, follow_changes
from edge_runner.sources.cluster_secrets import REFRESH_SECONDS, ClusterSecrets
from edge_runner.sources.handoff import Handoff
from edge_runner.sources.registration import FIELD_MANAGER, Registration
from edge_runner.wasm.blobs import BlobStore

log = logging.getLogger("edge_runner.sources.cluster")

#: Seconds between full re-lists (a safety net under the watch).
RESYNC_SECONDS = 300.0
#: Shortest time from the end of one apply to the next: events meanwhile are applied
#: together (a burst costs one apply per this much).
DEBOUNCE_SECONDS = 0.05
#: Longest wait for more events after a change before applying it; the wait is as
#: long as the last apply took, up to this (see :func:`_consume`).
COALESCE_SECONDS = 0.1
#: Longest wait for the owner's ``status.handoff`` to confirm a new ConfigMap before
#: the mismatch is applied (and reported as such).
CONFIRM_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 10.0
#: Longest single watch request (the server ends it; the client opens the next).
WATCH_SECONDS = 300

_Events = asyncio.Queue[tuple[str, str, dict[str, Any]] | BaseException | None]
#: What is watched: ConfigMaps (what to serve) and the objects whose status confirms them.
_WATCHED: tuple[tuple[str, Any], ...] = (
    ("ConfigMap", ConfigMap), ("EdgeFunction", EdgeFunctionResource),
    ("EdgeRoute", EdgeRouteResource))
#: Only ConfigMaps the operator labelled.
_SELECTOR: LabelSelector = {LABEL_KIND: exists()}


class _Desired:
    """The ConfigMaps seen so far, parsed once per resourceVersion; with ``handoff``,
    only those the operator confirmed are used (sources/handoff.py)."""

    def __init__(self, handoff: Handoff | None = None,
                 artifacts: Artifacts | None = None) -> None:
        self.handoff = handoff
        self.artifacts = artifacts
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

    def unconfirmed(self, obj: dict[str, Any]) -> bool:
        """True if the ConfigMap ``obj`` is not (yet) what its owner's ``status.handoff``
        says: applying it changes nothing served, only the error reported."""
        name = obj["metadata"]["name"]
        parsed = self._parse(name, obj)
        return self.handoff is not None and isinstance(parsed, FunctionConfig | RouteConfig) \
            and not self.handoff.confirms(name, obj, parsed)

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
        if self.handoff is not None:
            self.handoff.begin()
        for name in sorted(self.objects):
            parsed: FunctionConfig | RouteConfig | WireError | None = \
                self._parse(name, self.objects[name])
            origin = f"configmap/{name}"
            if self.handoff is not None and isinstance(parsed, FunctionConfig | RouteConfig):
                parsed, error = self.handoff.check(name, self.objects[name], parsed)
                if error is not None:
                    state.errors.append(error)
            if isinstance(parsed, FunctionConfig):
                state.functions.append(self._function_source(parsed, origin))
            elif isinstance(parsed, RouteConfig):
                state.jwks.update(parsed.jwks)
                routes.append((origin, parsed))
            elif parsed is not None:
                state.errors.append(f"{origin}: {parsed}")
        # Oldest first: of two conflicting rules the older route's is served.
        state.routes.extend(by_age([(r.name, r.spec, r.created) for _origin, r in routes]))
        state.functions.extend(_pending(routes, {f.name for f in state.functions}))
        for stale in set(self._parsed) - set(self.objects):
            del self._parsed[stale]
        if self.handoff is not None:
            self.handoff.forget(set(self.objects))
        if self.artifacts is not None:
            self.artifacts.retain({parsed.artifact.digest for _, parsed in self._parsed.values()
                                   if isinstance(parsed, FunctionConfig) and parsed.artifact})
        return state

    def _function_source(self, config: FunctionConfig, origin: str) -> FunctionSource:
        if config.artifact is None:
            return _function_source(config, origin)
        module = self.artifacts.module(config.artifact) if self.artifacts else "no fetcher"
        if isinstance(module, str):
            return FunctionSource(config.name, config.spec, None, origin, f"{origin}: {module}")
        return _function_source(replace(config, module=module), origin)


def _function_source(config: FunctionConfig, origin: str) -> FunctionSource:
    try:
        check_binary(config.module)
    except ModuleRejected as exc:
        return FunctionSource(config.name, config.spec, None, origin,
                              f"{origin}: {exc.reason}: {exc}")
    return FunctionSource(config.name, config.spec, config.module, origin,
                          digest=config.digest.removeprefix("sha256:"))


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
    resync: float = RESYNC_SECONDS, blob_dir: Path | None = None,
) -> None:
    client = async_client(field_manager=FIELD_MANAGER)
    ns = _namespace(namespace, client)
    secrets = ClusterSecrets(client, ns)
    artifacts = Artifacts(kube=client, namespace=ns, store=BlobStore(blob_dir),
                          metrics=catalog.metrics)
    desired = _Desired(Handoff(), artifacts)
    # A finished download applies the whole state again, Secrets attached as for a watch event.
    fetched = asyncio.create_task(follow_changes(
        artifacts, lambda: _apply(catalog, desired, secrets), stop), name="artifacts")
    backoff = 0.5
    registration = Registration(kube=client, namespace=ns, catalog=catalog,
                                runner_id=runner_id, duration=lease_seconds)
    heartbeat: asyncio.Task[None] | None = None
    log.info("watching configmaps in namespace %s", ns)
    try:
        while not stop.is_set():
            try:
                versions = await _list_all(client, ns, desired)
                await _apply(catalog, desired, secrets)
                backoff = 0.5
                if heartbeat is None:
                    heartbeat = asyncio.create_task(registration.run(stop), name="heartbeat")
                await _follow(client, ns, versions=versions, desired=desired,
                              catalog=catalog, deadline=time.monotonic() + resync,
                              secrets=secrets)
            except KUBE_ERRORS as exc:
                log.warning("API server unreachable or failing (%s); serving the last good"
                            " configuration, retrying in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
    finally:
        fetched.cancel()
        await asyncio.gather(fetched, return_exceptions=True)
        await artifacts.close()
        if heartbeat is not None:
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        await client.close()


async def _list_all(client: AsyncClient, namespace: str, desired: _Desired) -> dict[str, str]:
    """List the labelled ConfigMaps and the objects confirming them; their resourceVersions."""
    versions: dict[str, str] = {}
    for kind, resource in _WATCHED:
        listing = client.list(resource, namespace=namespace,
                              labels=_SELECTOR if kind == "ConfigMap" else None)
        items = [item.to_dict() async for item in listing]
        if kind == "ConfigMap":
            desired.replace_all(items)
        elif desired.handoff is not None:
            desired.handoff.replace_owners(kind, items)
        versions[kind] = str(listing.resourceVersion)
    return versions


async def _apply(catalog: Catalog, desired: _Desired, secrets: ClusterSecrets) -> None:
    started = time.monotonic()
    state = desired.state()
    built = time.monotonic()
    await catalog.apply(await secrets.attach(state))
    log.debug("applied %d functions, %d routes in %.3fs (desired state %.3fs)",
              len(state.functions), len(state.routes), time.monotonic() - started,
              built - started)
    if desired.handoff is not None:
        catalog.metrics.forged_configmaps.set(desired.handoff.rejected)


async def _follow(
    client: AsyncClient, namespace: str, *, versions: dict[str, str], desired: _Desired,
    catalog: Catalog, deadline: float, secrets: ClusterSecrets,
) -> None:
    """Watch from ``versions`` until ``deadline`` or a 410 Gone; returns to re-list (or raises)."""
    queue: _Events = asyncio.Queue()
    pumps = [asyncio.create_task(_pump(client, kind, resource, namespace, versions[kind],
                                             queue=queue))
             for kind, resource in _WATCHED]
    try:
        await _consume(queue, desired, catalog, deadline, secrets)
    finally:
        for pumping in pumps:
            pumping.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(client: AsyncClient, kind: str, resource: Any, namespace: str, since: str, *,
                queue: _Events) -> None:
    """Move watch events of ``resource`` into ``queue``; ends with None, or with the exception.

    lightkube opens the next watch request from the last resourceVersion seen
    when the server ends one, so this runs until cancelled or an error.
    """
    try:
        async for event, obj in client.watch(
                resource, namespace=namespace, resource_version=since,
                labels=_SELECTOR if kind == "ConfigMap" else None,
                server_timeout=WATCH_SECONDS):
            queue.put_nowait((kind, event, obj.to_dict()))
        queue.put_nowait(None)
    except Exception as exc:  # handed to the consumer, which re-raises it
        queue.put_nowait(exc)


async def _consume(queue: _Events, desired: _Desired, catalog: Catalog, deadline: float,
                   secrets: ClusterSecrets) -> None:
    """Apply events until ``deadline``, the end of the watch or a 410 Gone; re-read the
    Secrets in use every REFRESH_SECONDS and apply when they changed.

    When a change arrives, the events already queued are taken in, then the runner
    waits for more for as long as its last apply took, at most COALESCE_SECONDS,
    and applies: with a few functions an apply takes milliseconds and a lone
    change is applied at once; with 1,000 an apply takes long enough that the
    events that come together (a function and its route, each confirmed by its
    owner's status a few milliseconds apart) are worth one apply instead of two.
    Between two applies DEBOUNCE_SECONDS pass at least, so a burst costs one apply
    per that much.  Events that change nothing served are not applied at once:
    EdgeFunction and EdgeRoute events whose ``status.handoff`` did not change (the
    operator's rollout counts, kopf's annotations), and a ConfigMap its owner has
    not confirmed yet (the operator writes the ConfigMap, then the status): that
    one is applied with the confirmation, or after CONFIRM_SECONDS to report it
    (a forgery).
    """
    first: float | None = None  # when the first change not applied yet arrived
    applied, cost = -math.inf, 0.0  # when the last apply ended, how long it took
    unconfirmed: float | None = None  # when to report unconfirmed ConfigMaps
    while True:
        now = time.monotonic()
        left = deadline - now
        if left <= 0:
            break
        if first is not None:
            wait = max(first + min(cost, COALESCE_SECONDS), applied + DEBOUNCE_SECONDS) - now
        else:
            wait = REFRESH_SECONDS if unconfirmed is None else unconfirmed - now
        try:
            item = queue.get_nowait() if wait <= 0 else \
                await asyncio.wait_for(queue.get(), min(wait, left))
        except (TimeoutError, asyncio.QueueEmpty):
            if first is not None or (unconfirmed is not None and time.monotonic() >= unconfirmed):
                started = time.monotonic()
                await _apply(catalog, desired, secrets)
                applied = time.monotonic()
                cost, first, unconfirmed = applied - started, None, None
            elif unconfirmed is None and await secrets.refresh():
                await _apply(catalog, desired, secrets)
            continue
        if item is None:
            break
        if isinstance(item, BaseException):
            if status_code(item) == 410:
                log.info("watch expired (410 Gone); listing again")
                break
            raise item
        kind, event, obj = item
        if event == "BOOKMARK":
            continue
        if kind == "ConfigMap":
            desired.apply_event(event, obj)
            changed = event == "DELETED" or not desired.unconfirmed(obj)
            if not changed:
                unconfirmed = unconfirmed or time.monotonic() + CONFIRM_SECONDS
        else:
            changed = desired.handoff is not None \
                and desired.handoff.owner_event(kind, event, obj)
        if changed and first is None:
            first = time.monotonic()
    if first is not None or unconfirmed is not None:
        await _apply(catalog, desired, secrets)
