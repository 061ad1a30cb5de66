"""Reconcile EdgeRoutes: publish each route, report conflicts across all of them.

Called by :mod:`edge_operator.reconcile`.  A route's ConfigMap is written like a
function's, with the route's functions that do not exist in the namespace
(runners answer those with a final 500 instead of "retry later"), and
:func:`reconcile_route` returns its ``Ready`` condition (``FunctionNotFound``
while a function is missing); :func:`summary` gives the status fields
``kubectl get er -o wide`` shows (paths, functions, and the URL when the
operator knows the public one).
Conflicts are a property of the whole namespace (the older route wins a tie;
its creationTimestamp travels in the ConfigMap so runners agree): after any
route changes or goes, :class:`ConflictSync` lists the namespace's routes, recomputes every
``Conflict`` condition with the same route table the runners use
(:func:`conflict_conditions`, pure, over :mod:`edge_api.routing`) and applies
those that changed, a few at once (:func:`edge_operator.status.bounded`), as the
only writer of ``Conflict`` (field manager ``edge-operator-conflicts``, see
:mod:`edge_operator.status`).  Syncs of one
namespace run one at a time, and a request made while one runs is served by
the next, which lists afresh: the last sync always sees the last change.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Collection, Sequence
from typing import Any
from urllib.parse import urlsplit

from lightkube import AsyncClient
from pydantic import ValidationError

from edge_api.constants import KIND_ROUTE
from edge_api.fetch import Network
from edge_api.handoff import STATUS_FIELD, handoff_digest
from edge_api.k8s import EdgeRouteResource
from edge_api.models import EdgeRouteSpec, describe_validation_error
from edge_api.routing import build_table, by_age
from edge_api.wire import owner_reference, route_configmap, route_configmap_name
from edge_operator import events
from edge_operator.conditions import Want
from edge_operator.jwks import describe, jwks_for
from edge_operator.metrics import OperatorMetrics
from edge_operator.publish import NotOwned, apply_configmap
from edge_operator.status import (
    CONFLICT_MANAGER,
    Status,
    apply_status,
    bounded,
    conflict_status,
)

log = logging.getLogger("edge_operator.routes")

NO_CONFLICT = Want("Conflict", False, "NoConflict", "")


def result(ready: Want) -> str:
    """The ``result`` label of the reconciles metric for a route's ``Ready``."""
    if ready.status:
        return "ok"
    return "error" if ready.reason == "ConfigMapNotOwned" else "invalid"


def route_url(spec: EdgeRouteSpec, public_url: str | None) -> str | None:
    """Where clients reach the route's first rule, if the operator knows the public URL.

    The scheme and port come from ``public_url`` (the chart sets it from its
    Ingress or HTTPRoute); the host is the route's first exact host, else the
    public URL's.  None for a route whose hosts are all wildcards.
    """
    if not public_url:
        return None
    base = urlsplit(public_url)
    exact = [host for host in spec.hosts if not host.startswith("*.")]
    if spec.hosts and not exact:
        return None
    host = exact[0] if exact else base.hostname or ""
    port = f":{base.port}" if base.port else ""
    prefix = base.path.rstrip("/") if not exact else ""
    return f"{base.scheme}://{host}{port}{prefix}{spec.rules[0].match.path}"


def summary(body: dict[str, Any], public_url: str | None) -> dict[str, Any]:
    """The status fields ``kubectl get er -o wide`` shows ({} for a spec the models refuse)."""
    try:
        spec = EdgeRouteSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return {}
    fields: dict[str, Any] = {
        "paths": ",".join(dict.fromkeys(rule.match.path for rule in spec.rules)),
        "functions": ",".join(spec.function_names()),
    }
    url = route_url(spec, public_url)
    if url is not None:
        fields["url"] = url
    return fields


def missing_functions(spec: EdgeRouteSpec, existing: Collection[str]) -> list[str]:
    return [name for name in spec.function_names() if name not in existing]


async def reconcile_route(body: dict[str, Any], *, kube: AsyncClient, metrics: OperatorMetrics,
                          existing: Collection[str] | None = None,
                          published: dict[str, Any] | None = None,
                          allow: Sequence[Network] = ()) -> Want:
    """Publish the route's ConfigMap; its ``Ready`` condition.

    ``existing``: the EdgeFunctions of the route's namespace (None: not checked).
    ``published``: filled with ``{"handoff": digest}`` of the ConfigMap written (the
    status field runners check before serving it, edge_api.handoff).
    """
    metadata = body["metadata"]
    try:
        spec = EdgeRouteSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return Want("Ready", False, "InvalidSpec", describe_validation_error(exc))
    missing = missing_functions(spec, existing) if existing is not None else []
    name = route_configmap_name(metadata["name"])
    documents, failures = await jwks_for(spec.jwks_uris(), kube=kube,
                                         namespace=metadata["namespace"], configmap=name,
                                         allow=allow)
    configmap = route_configmap(name=metadata["name"], namespace=metadata["namespace"],
                                spec=spec, owner=owner_reference(body), missing=missing,
                                jwks=documents,
                                created=str(metadata.get("creationTimestamp") or ""))
    try:
        await apply_configmap(kube, configmap, metrics)
    except NotOwned as exc:
        return Want("Ready", False, "ConfigMapNotOwned", str(exc))
    if published is not None:
        published[STATUS_FIELD] = handoff_digest(configmap)
    if missing:
        return Want("Ready", False, "FunctionNotFound",
                    f"no EdgeFunction {', '.join(missing)} in namespace {metadata['namespace']};"
                    " requests routed to it get 500 until it exists")
    if failures:
        return Want("Ready", False, "JwksFetchFailed", describe(failures, documents))
    return Want("Ready", True, "Published", f"published as configmap/{name}")


def conflict_conditions(routes: list[dict[str, Any]]) -> dict[str, Want]:
    """The ``Conflict`` condition every route in a namespace should have.

    Of two conflicting rules the older route's wins (creationTimestamp, then name).
    """
    specs = []
    for route in routes:
        metadata = route["metadata"]
        try:
            specs.append((metadata["name"], EdgeRouteSpec.model_validate(route.get("spec") or {}),
                          str(metadata.get("creationTimestamp") or "")))
        except ValidationError:
            continue
    table = build_table(by_age(specs))
    messages: dict[str, list[str]] = {}
    for conflict in table.conflicts:
        for ident in (conflict.kept, conflict.dropped):
            messages.setdefault(ident.rsplit("/", 1)[0], []).append(conflict.describe())
    return {
        name: Want("Conflict", True, "RulesConflict", "; ".join(sorted(set(messages[name]))))
        if name in messages else NO_CONFLICT
        for name, _spec, _created in specs
    }


class ConflictSync:
    """Keeps every route's ``Conflict`` condition right, one namespace sync at a time."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._requested: defaultdict[str, int] = defaultdict(int)
        self._covered: defaultdict[str, int] = defaultdict(int)

    async def sync(self, namespace: str, *, kube: AsyncClient,
                   metrics: OperatorMetrics) -> None:
        """Return once a sync that started after this call has finished."""
        self._requested[namespace] += 1
        ticket = self._requested[namespace]
        async with self._locks[namespace]:
            if self._covered[namespace] >= ticket:
                return  # a sync that listed after this request already ran
            covers = self._requested[namespace]
            await self._sync(namespace, kube=kube, metrics=metrics)
            self._covered[namespace] = covers

    async def _sync(self, namespace: str, *, kube: AsyncClient,
                    metrics: OperatorMetrics) -> None:
        routes = [dict(r) async for r in kube.list(EdgeRouteResource, namespace=namespace)]
        routes = [r for r in routes if not r["metadata"].get("deletionTimestamp")]
        # Off the event loop: with 1,000 routes this takes a few hundred ms of CPU, which
        # would hold up the reconciles of a function and route applied together.
        wanted = await asyncio.to_thread(conflict_conditions, routes)
        writes = []
        for route in routes:
            metadata = route["metadata"]
            # A spec the models refuse is in no table: no conflict (its Ready says why).
            want = wanted.get(metadata["name"], NO_CONFLICT)
            status = conflict_status(route.get("status"), want, metadata.get("generation"))
            if status is not None:
                writes.append(self._write(route, status, want, kube=kube, metrics=metrics))
        await bounded(writes)

    @staticmethod
    async def _write(route: dict[str, Any], status: Status, want: Want, *, kube: AsyncClient,
                     metrics: OperatorMetrics) -> None:
        metadata = route["metadata"]
        written = await apply_status(kube, KIND_ROUTE, name=metadata["name"],
                                     namespace=metadata["namespace"], status=status,
                                     manager=CONFLICT_MANAGER, metrics=metrics)
        if written and want.status:
            await events.post(kube, route, "RulesConflict", want.message, kind=KIND_ROUTE)
