"""Who writes which status field of EdgeFunction and EdgeRoute, and how.

Called by the kopf handlers (:mod:`edge_operator.handlers`), the conflict
sync (:mod:`edge_operator.routes`) and the rollout tracker
(:mod:`edge_operator.propagation`).  The builders are pure; :func:`apply_status`
is the one place that writes a status.

**One writer per field, by server-side apply.**  Three parts of the operator
report on the same objects at their own pace: the reconcile of an object, the
rollout tracker (every Lease change) and the conflict sync (every change of
any route in the namespace).  With JSON merge patches, ``conditions`` is
replaced as a whole list, so every writer must send everybody's conditions as
of the snapshot it last read, and drops whatever another writer added since:
that is how routes applied together lost ``Ready`` (the conflict sync, started
by one route, rewrote the list of another route without the ``Ready`` its own
handler had just written).  A shared merge with retries on resourceVersion
conflicts would fix the symptom, but any writer that forgets the precondition
brings it back.  Instead each writer owns a disjoint set of fields under its
own field manager and sends them, and only them, by server-side apply: the
CRDs declare ``conditions`` a map list keyed by ``type``, so the API server
merges each applied entry into the list and leaves entries of other managers
alone, whatever their age.  Each writer always sends all the fields it owns
(one it omitted would be removed) and forces: the operator is the authority
over status, and forcing takes over fields written by earlier versions.

* function reconcile, ``edge-operator``, on EdgeFunction: ``observedGeneration``,
  ``digest``, ``shortDigest``, ``size``, ``artifact``, ``handoff``; ``Ready``,
  ``ModuleValid``;
* rollout tracker, ``edge-operator-rollout``, on EdgeFunction: ``readyRunners``,
  ``totalRunners``, ``runners``; ``Propagated``;
* route reconcile, ``edge-operator``, on EdgeRoute: ``observedGeneration``,
  ``paths``, ``functions``, ``url``, ``handoff``; ``Ready``;
* conflict sync, ``edge-operator-conflicts``, on EdgeRoute: ``Conflict``.

A builder returns None when the object already shows exactly what its writer
would send, so an unchanged object causes no write at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any, Final

from lightkube import ApiError, AsyncClient
from lightkube.types import PatchType

from edge_api.constants import API_VERSION, KIND_FUNCTION, KIND_ROUTE
from edge_api.k8s import EdgeFunctionResource, EdgeRouteResource, status_code
from edge_operator.conditions import Want, owned, unchanged
from edge_operator.metrics import OperatorMetrics

#: Field manager of the reconciles (status of the object reconciled, and ConfigMaps).
FIELD_MANAGER: Final = "edge-operator"
#: Field manager of the rollout tracker (runner counts and ``Propagated``).
ROLLOUT_MANAGER: Final = "edge-operator-rollout"
#: Field manager of the conflict sync (``Conflict`` of every route).
CONFLICT_MANAGER: Final = "edge-operator-conflicts"

#: EdgeFunction fields the reconcile owns besides ``observedGeneration`` and its
#: conditions.  They keep their last values when a later reconcile fails.
FUNCTION_FIELDS: Final = ("digest", "shortDigest", "size", "artifact", "handoff")
FUNCTION_CONDITIONS: Final = ("Ready", "ModuleValid")
ROLLOUT_FIELDS: Final = ("readyRunners", "totalRunners", "runners")
ROLLOUT_CONDITIONS: Final = ("Propagated",)
ROUTE_FIELDS: Final = ("paths", "functions", "url", "handoff")
ROUTE_CONDITIONS: Final = ("Ready",)
CONFLICT_CONDITIONS: Final = ("Conflict",)

#: Status writes of one batch (a rollout pass, a conflict sync) under way at once:
#: 1,000 routes' first ``Conflict`` take seconds, not minutes of one write at a time,
#: and the API client's connection pool is not exhausted.
WRITERS: Final = 8

Status = dict[str, Any]


def _owned_status(current: Mapping[str, Any] | None, fields: Mapping[str, Any],
                  wants: Sequence[Want], allowed: Sequence[str], generation: int | None
                  ) -> Status | None:
    if sorted(w.type for w in wants) != sorted(allowed):
        raise ValueError(f"this writer owns exactly {sorted(allowed)}, not "
                         f"{sorted(w.type for w in wants)}")
    current = current or {}
    conditions = owned(current.get("conditions"), wants, generation)
    if all(current.get(k) == v for k, v in fields.items()) \
            and unchanged(current.get("conditions"), conditions):
        return None
    return {**fields, "conditions": conditions}


def function_status(current: Mapping[str, Any] | None, fields: Mapping[str, Any],
                    wants: Sequence[Want], generation: int | None) -> Status | None:
    """What the function reconcile applies: ``fields`` this reconcile computed,
    the others of :data:`FUNCTION_FIELDS` as they are, ``observedGeneration``
    and the ``Ready``/``ModuleValid`` conditions; None if nothing would change."""
    unknown = set(fields) - set(FUNCTION_FIELDS)
    if unknown:
        raise ValueError(f"not fields of the function reconcile: {sorted(unknown)}")
    current = current or {}
    kept = {k: current[k] for k in FUNCTION_FIELDS if current.get(k) is not None}
    return _owned_status(current, {**kept, **fields, "observedGeneration": generation}, wants,
                         FUNCTION_CONDITIONS, generation)


def rollout_status(current: Mapping[str, Any] | None, fields: Mapping[str, Any],
                   propagated: Want, generation: int | None) -> Status | None:
    """What the rollout tracker applies: runner counts and ``Propagated``."""
    if set(fields) != set(ROLLOUT_FIELDS):
        raise ValueError(f"the rollout tracker sends exactly {list(ROLLOUT_FIELDS)}")
    return _owned_status(current, fields, [propagated], ROLLOUT_CONDITIONS, generation)


def route_status(current: Mapping[str, Any] | None, ready: Want, generation: int | None,
                 fields: Mapping[str, Any] | None = None) -> Status | None:
    """What the route reconcile applies: ``observedGeneration``, the summary ``fields``
    (of :data:`ROUTE_FIELDS`; one left out is removed) and ``Ready``."""
    fields = dict(fields or {})
    unknown = set(fields) - set(ROUTE_FIELDS)
    if unknown:
        raise ValueError(f"not fields of the route reconcile: {sorted(unknown)}")
    current = current or {}
    dropped = any(current.get(k) is not None and k not in fields for k in ROUTE_FIELDS)
    status = _owned_status(current, {**fields, "observedGeneration": generation}, [ready],
                           ROUTE_CONDITIONS, generation)
    if status is None and dropped:
        return {**fields, "observedGeneration": generation,
                "conditions": owned(current.get("conditions"), [ready], generation)}
    return status


def conflict_status(current: Mapping[str, Any] | None, conflict: Want, generation: int | None
                    ) -> Status | None:
    """What the conflict sync applies to one route: its ``Conflict`` condition."""
    return _owned_status(current, {}, [conflict], CONFLICT_CONDITIONS, generation)


def status_body(kind: str, name: str, namespace: str, status: Status) -> dict[str, Any]:
    """The apply configuration of a status subresource."""
    return {"apiVersion": API_VERSION, "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "status": status}


_RESOURCES: Final = {KIND_FUNCTION: EdgeFunctionResource, KIND_ROUTE: EdgeRouteResource}
_METRIC_LABELS: Final = {KIND_FUNCTION: "edgefunction-status", KIND_ROUTE: "edgeroute-status"}


async def apply_status(client: AsyncClient, kind: str, *, name: str, namespace: str,
                       status: Status, manager: str, metrics: OperatorMetrics) -> bool:
    """Server-side apply ``status`` of an EdgeFunction or EdgeRoute as ``manager``;
    False if the object is gone."""
    resource = _RESOURCES[kind]
    body = status_body(kind, name, namespace, status)
    try:
        await client.patch(resource.Status, name, body, namespace=namespace,
                           patch_type=PatchType.APPLY, field_manager=manager, force=True)
    except ApiError as exc:
        if status_code(exc) == 404:
            return False
        raise
    metrics.writes.labels(_METRIC_LABELS[kind], "patch").inc()
    return True


async def bounded(writes: Iterable[Awaitable[None]], limit: int = WRITERS) -> None:
    """Await ``writes``, at most ``limit`` at once; the first failure is raised once
    all have finished."""
    gate = asyncio.Semaphore(limit)

    async def one(write: Awaitable[None]) -> None:
        async with gate:
            await write

    results = await asyncio.gather(*(one(write) for write in writes), return_exceptions=True)
    for outcome in results:
        if isinstance(outcome, BaseException):
            raise outcome
