"""Run the reconcile of one EdgeFunction or EdgeRoute and report it, one at a time per object.

Sits between the kopf handlers (:mod:`edge_operator.handlers`) and the pure
decisions (:mod:`edge_operator.functions`, :mod:`edge_operator.routes`).  A
reconcile starts from one of four places:

* kopf: an object was created, its spec changed, or the operator started
  (with kopf's retries of a transient failure);
* a ConfigMap that EdgeFunctions reference through ``spec.source.configMapRef``
  changed (the handlers watch ConfigMaps): a rebuilt module reaches the runners
  within seconds, not at the next resync;
* an EdgeFunction appeared or went: the routes that name it are reconciled
  again, so their ``Ready`` (``FunctionNotFound``) and the runners' answer
  follow;
* a ConfigMap the operator published was deleted or edited by someone
  (:meth:`Reconciler.published_changed`, from the handlers' watch): repaired at once;
* :meth:`Reconciler.resync`, every ``--resync-interval``: ``oci`` tags and JWKS
  documents change without any event, failures are retried, and it is the
  safety net for missed events.  Objects whose inputs did not change since
  their last reconcile, which ended ``Ready``, are skipped
  (:mod:`edge_operator.rest`), so a quiet namespace costs two lists.

Whatever the trigger, :class:`Reconciler` reads the object afresh, runs the
reconcile under a per-object lock (two triggers never interleave, and the later
one sees the earlier one's status) and at most :data:`MAX_RECONCILES` at once,
applies the status fields its writer owns (:mod:`edge_operator.status`), posts
a Warning event when that status changes to a failure
(:mod:`edge_operator.events`); the rollout tracker sees the new status through
the watch (:mod:`edge_operator.propagation`).

No kopf timer or daemon is involved on purpose: kopf puts a finalizer on every
object that has one, which blocks deleting the objects (and their CRDs) once
the operator is uninstalled.  Nothing here needs a finalizer: the ConfigMaps
the operator writes carry owner references and are garbage-collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lightkube import AsyncClient

from edge_api.constants import KIND_FUNCTION, KIND_ROUTE
from edge_api.fetch import parse_networks
from edge_api.handoff import STATUS_FIELD, handoff_digest
from edge_api.k8s import KUBE_ERRORS, EdgeFunctionResource, EdgeRouteResource, is_not_found
from edge_api.models import EdgeRouteSpec
from edge_operator import events
from edge_operator.conditions import Want
from edge_operator.config import RESYNC_SECONDS, OperatorConfig
from edge_operator.functions import FunctionOutcome, reconcile_function
from edge_operator.metrics import OperatorMetrics
from edge_operator.rest import (
    Key,
    RestState,
    must_recheck_function,
    must_recheck_route,
    route_missing,
)
from edge_operator.routes import ConflictSync, reconcile_route, result, summary
from edge_operator.status import FIELD_MANAGER, apply_status, function_status, route_status
from edge_operator.validation import ValidationCache

log = logging.getLogger("edge_operator.reconcile")

_RESOURCES: Final = {KIND_FUNCTION: EdgeFunctionResource, KIND_ROUTE: EdgeRouteResource}
#: Reconciles that run at once.  A thousand objects applied together start a
#: thousand handlers; unbounded, they exhaust the API client's connection pool and
#: fail (kopf retries them a minute later).  Bounded, they queue and each finishes.
MAX_RECONCILES: Final = 16
#: The namespace's EdgeFunctions, as known when called.
Existing = Callable[[], set[str]]


def named_functions(route: Mapping[str, Any]) -> list[str]:
    """The functions ``route`` (an EdgeRoute as a dict) sends requests to ([] for a spec
    the models refuse)."""
    try:
        spec = EdgeRouteSpec.model_validate(route.get("spec") or {})
    except ValueError:
        return []
    return spec.function_names()


async def _live(kube: AsyncClient, kind: str, namespace: str) -> list[dict[str, Any]]:
    """The namespace's objects of ``kind`` that are not being deleted."""
    items = [dict(item) async for item in kube.list(_RESOURCES[kind], namespace=namespace)]
    return [item for item in items if not item["metadata"].get("deletionTimestamp")]


@dataclass
class Reconciler:
    """Runs reconciles, one at a time per object; shared by every trigger."""

    kube: AsyncClient
    config: OperatorConfig
    metrics: OperatorMetrics
    validations: ValidationCache = field(default_factory=ValidationCache)
    conflicts: ConflictSync = field(default_factory=ConflictSync)
    #: What the last reconciles did and what the ConfigMap watch saw (resync skips).
    rest: RestState = field(default_factory=RestState)
    _locks: weakref.WeakValueDictionary[tuple[str, str, str], asyncio.Lock] = field(
        default_factory=weakref.WeakValueDictionary)
    _running: asyncio.Semaphore = field(
        default_factory=lambda: asyncio.Semaphore(MAX_RECONCILES))

    def _lock(self, key: Key) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    @contextlib.asynccontextmanager
    async def _exclusive(self, kind: str, namespace: str, name: str, *,
                         only_if_stale: bool = False) -> AsyncIterator[dict[str, Any] | None]:
        """Hold the object's lock and yield the object as it is now (None if gone).

        ``only_if_stale``: yield None, reading nothing, if once the lock is held the
        object's published ConfigMap is what its last reconcile wrote (a repair that
        an earlier reconcile made unnecessary).
        """
        key = (kind, namespace, name)
        async with self._lock(key):
            if only_if_stale and not self.rest.stale(key):
                yield None
                return
            async with self._running:  # nothing inside takes another object's lock
                body = await self._current(kind, namespace, name)
                if body is None:
                    self.rest.forget(key)
                else:  # recorded again when the reconcile finishes
                    self.rest.done.pop(key, None)
                yield body

    async def _current(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await self.kube.get(_RESOURCES[kind], name, namespace=namespace)
        except KUBE_ERRORS as exc:
            if is_not_found(exc):
                return None
            raise
        body = dict(found)
        return None if body["metadata"].get("deletionTimestamp") else body

    # -- EdgeFunction ------------------------------------------------------------------

    async def function(self, namespace: str, name: str, *, retry: int = 0,
                       only_if_stale: bool = False) -> FunctionOutcome | None:
        """Reconcile the EdgeFunction and report it; None if it does not exist."""
        async with self._exclusive(KIND_FUNCTION, namespace, name,
                                   only_if_stale=only_if_stale) as body:
            if body is None:
                return None
            inputs = self.rest.inputs(body)
            with self.metrics.duration.labels("function").time():
                outcome = await reconcile_function(
                    body, kube=self.kube, config=self.config, metrics=self.metrics,
                    validations=self.validations, retry=retry)
                metadata = body["metadata"]
                status = function_status(body.get("status"), outcome.fields,
                                         outcome.conditions, metadata.get("generation"))
                if status is not None:
                    await apply_status(self.kube, KIND_FUNCTION, name=name, namespace=namespace,
                                       status=status, manager=FIELD_MANAGER,
                                       metrics=self.metrics)
                self.rest.record((KIND_FUNCTION, namespace, name), inputs,
                                 handoff=outcome.fields.get(STATUS_FIELD),
                                 fields=outcome.fields, conditions=outcome.conditions)
            self.metrics.reconciles.labels("function", outcome.result).inc()
            if status is not None and outcome.warning is not None:
                reason, message = outcome.warning
                log.warning("%s: %s", reason, message, extra={
                    "object": f"{namespace}/{name}", "kind": KIND_FUNCTION})
                await events.post(self.kube, body, reason, message, kind=KIND_FUNCTION)
            return outcome

    async def functions_using(self, namespace: str, configmap: str,
                              functions: Iterable[str]) -> None:
        """A ConfigMap changed: reconcile the EdgeFunctions that reference it."""
        for name in sorted(set(functions)):
            log.info("configmap %s changed; reconciling the function that uses it", configmap,
                     extra={"object": f"{namespace}/{name}", "kind": KIND_FUNCTION})
            await self.function(namespace, name)

    # -- EdgeRoute ---------------------------------------------------------------------

    async def _existing_functions(self, namespace: str) -> set[str]:
        functions = await _live(self.kube, KIND_FUNCTION, namespace)
        return {item["metadata"]["name"] for item in functions}

    async def route(self, namespace: str, name: str, *, existing: Existing | None = None,
                    only_if_stale: bool = False) -> Want | None:
        """Reconcile the EdgeRoute and report it; its ``Ready``, None if it does not exist.

        ``existing`` gives the namespace's EdgeFunctions (None: they are listed); it is
        called once the route's lock is held, so a reconcile that waited for another
        sees the functions as they are then, not as they were when it was asked for.
        """
        async with self._exclusive(KIND_ROUTE, namespace, name,
                                   only_if_stale=only_if_stale) as body:
            if body is None:
                return None
            with self.metrics.duration.labels("route").time():
                functions = existing() if existing is not None \
                    else await self._existing_functions(namespace)
                inputs = self.rest.inputs(body, route_missing(body, functions))
                handoff: dict[str, Any] = {}
                ready = await reconcile_route(
                    body, kube=self.kube, metrics=self.metrics, existing=functions,
                    published=handoff, allow=parse_networks(self.config.allow_fetch_from))
                metadata = body["metadata"]
                fields = {**summary(body, self.config.public_url), **handoff}
                status = route_status(body.get("status"), ready, metadata.get("generation"),
                                      fields)
                if status is not None:
                    await apply_status(self.kube, KIND_ROUTE, name=name, namespace=namespace,
                                       status=status, manager=FIELD_MANAGER,
                                       metrics=self.metrics)
                self.rest.record((KIND_ROUTE, namespace, name), inputs,
                                 handoff=handoff.get(STATUS_FIELD), fields=fields,
                                 conditions=[ready])
            self.metrics.reconciles.labels("route", result(ready)).inc()
            if status is not None and not ready.status:
                log.warning("%s: %s", ready.reason, ready.message, extra={
                    "object": f"{namespace}/{name}", "kind": KIND_ROUTE})
                await events.post(self.kube, body, ready.reason, ready.message, kind=KIND_ROUTE)
            return ready

    async def routes_to(self, namespace: str, routes: Iterable[str],
                        existing: Existing) -> None:
        """An EdgeFunction appeared or went: reconcile ``routes``, those that name it
        (from the handlers' index), with ``existing``, the namespace's functions."""
        for name in sorted(set(routes)):
            await self.route(namespace, name, existing=existing)

    # -- published ConfigMaps ----------------------------------------------------------

    async def published_changed(self, configmap: Mapping[str, Any], *, deleted: bool) -> None:
        """The watch saw a ConfigMap the operator writes: repair it if it is not what the
        last reconcile of its owner published (deleted, or edited by someone)."""
        metadata = configmap.get("metadata") or {}
        owner = next((ref for ref in metadata.get("ownerReferences") or []
                      if ref.get("controller")), None)
        if owner is None or owner.get("kind") not in _RESOURCES:
            return
        key = (str(owner["kind"]), str(metadata.get("namespace")), str(owner.get("name")))
        differs = self.rest.published_seen(key, str(owner.get("uid")),
                                           None if deleted else handoff_digest(configmap))
        # A reconcile under way may have read the ConfigMap before this change.
        if not differs and not self._lock(key).locked():
            return
        log.info("configmap %s %s; repairing it if needed", metadata.get("name"),
                 "deleted" if deleted else "changed", extra={"object": f"{key[1]}/{key[2]}",
                                                             "kind": key[0]})
        if key[0] == KIND_FUNCTION:
            await self.function(key[1], key[2], only_if_stale=True)
        else:
            await self.route(key[1], key[2], only_if_stale=True)

    # -- resync ------------------------------------------------------------------------

    async def resync(self, namespaces: list[str], interval: float = RESYNC_SECONDS) -> None:
        """Every ``interval`` seconds, reconcile every EdgeFunction and EdgeRoute whose
        inputs may have changed (forever)."""
        while True:
            await asyncio.sleep(interval)
            for namespace in namespaces:
                try:
                    await self.resync_namespace(namespace)
                except KUBE_ERRORS as exc:
                    log.warning("resync of %s failed: %s", namespace, exc)

    def _quiet_function(self, body: dict[str, Any]) -> bool:
        metadata = body["metadata"]
        key = (KIND_FUNCTION, metadata["namespace"], metadata["name"])
        done = self.rest.done.get(key)
        intact = done is not None and function_status(
            body.get("status"), done.fields, list(done.conditions),
            metadata.get("generation")) is None
        return self.rest.skippable(key, self.rest.inputs(body), status_intact=intact,
                                   recheck=must_recheck_function(
                                       body, check_secrets=self.config.check_secrets))

    def _quiet_route(self, body: dict[str, Any], existing: set[str]) -> bool:
        metadata = body["metadata"]
        key = (KIND_ROUTE, metadata["namespace"], metadata["name"])
        done = self.rest.done.get(key)
        intact = done is not None and route_status(
            body.get("status"), done.conditions[0], metadata.get("generation"),
            done.fields) is None
        return self.rest.skippable(key, self.rest.inputs(body, route_missing(body, existing)),
                                   status_intact=intact, recheck=must_recheck_route(body))

    async def resync_namespace(self, namespace: str) -> None:
        """Reconcile the namespace's objects that :mod:`edge_operator.rest` may not skip."""
        listed = self.rest.records
        functions = await _live(self.kube, KIND_FUNCTION, namespace)
        existing = {f["metadata"]["name"] for f in functions}
        self.rest.keep_only(KIND_FUNCTION, namespace, existing)
        for function in functions:
            name = function["metadata"]["name"]
            if not self.rest.recorded_after((KIND_FUNCTION, namespace, name), listed) \
                    and not self._quiet_function(function):
                await self.function(namespace, name)
        listed = self.rest.records
        routes = await _live(self.kube, KIND_ROUTE, namespace)
        self.rest.keep_only(KIND_ROUTE, namespace, {r["metadata"]["name"] for r in routes})
        for route in routes:
            name = route["metadata"]["name"]
            if not self.rest.recorded_after((KIND_ROUTE, namespace, name), listed) \
                    and not self._quiet_route(route, existing):
                await self.route(namespace, name, existing=lambda: existing)
