"""Reconcile EdgeRoutes: publish each route, report conflicts across all of them.

Called by :mod:`edge_operator.handlers`.  A route's ConfigMap is written like a
function's; conflicts are a property of the whole namespace, so after any
route changes :func:`conflict_conditions` recomputes them with the same route
table the runners use (:mod:`edge_api.routing`) and every route whose
``Conflict`` condition changed gets its status patched.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from edge_api.constants import GROUP, PLURAL_ROUTE, VERSION
from edge_api.kube import KubeClient, NotFound, resource_path
from edge_api.models import EdgeRouteSpec, describe_validation_error
from edge_api.routing import build_table
from edge_api.wire import owner_reference, route_configmap
from edge_operator.conditions import Want, find, merge
from edge_operator.metrics import OperatorMetrics
from edge_operator.publish import apply_configmap


async def reconcile_route(body: dict[str, Any], *, kube: KubeClient,
                          metrics: OperatorMetrics) -> list[Want]:
    metadata = body["metadata"]
    try:
        spec = EdgeRouteSpec.model_validate(body.get("spec") or {})
    except ValidationError as exc:
        return [Want("Ready", False, "InvalidSpec", describe_validation_error(exc))]
    configmap = route_configmap(name=metadata["name"], namespace=metadata["namespace"],
                                spec=spec, owner=owner_reference(body))
    await apply_configmap(kube, configmap, metrics)
    return [Want("Ready", True, "Published", f"published as configmap/"
                 f"{configmap['metadata']['name']}")]


def conflict_conditions(routes: list[dict[str, Any]]) -> dict[str, Want]:
    """The ``Conflict`` condition every route in a namespace should have."""
    specs = []
    for route in routes:
        try:
            specs.append((route["metadata"]["name"],
                          EdgeRouteSpec.model_validate(route.get("spec") or {})))
        except ValidationError:
            continue
    table = build_table(specs)
    messages: dict[str, list[str]] = {}
    for conflict in table.conflicts:
        for ident in (conflict.kept, conflict.dropped):
            messages.setdefault(ident.rsplit("/", 1)[0], []).append(conflict.describe())
    return {
        name: Want("Conflict", True, "RulesConflict", "; ".join(sorted(set(messages[name]))))
        if name in messages else Want("Conflict", False, "NoConflict", "")
        for name, _spec in specs
    }


async def sync_conflicts(namespace: str, *, kube: KubeClient, metrics: OperatorMetrics,
                         skip: str | None = None) -> dict[str, Want]:
    """Patch the Conflict condition of every route in ``namespace`` that is out of date.

    ``skip`` names a route whose status the caller patches itself.
    """
    listing = await kube.list(resource_path(GROUP, VERSION, PLURAL_ROUTE, namespace))
    routes = [r for r in listing.get("items", []) if not r["metadata"].get("deletionTimestamp")]
    wanted = conflict_conditions(routes)
    for route in routes:
        name = route["metadata"]["name"]
        want = wanted.get(name)
        if want is None or name == skip:
            continue
        status = route.get("status") or {}
        current = find(status.get("conditions"), "Conflict")
        if current and current.get("status") == want.status_text \
                and current.get("message") == want.message:
            continue
        conditions = merge(status.get("conditions"), [want], route["metadata"].get("generation"))
        try:
            await kube.merge_patch(
                resource_path(GROUP, VERSION, PLURAL_ROUTE, namespace, name, "status"),
                {"status": {"conditions": conditions}},
            )
        except NotFound:
            continue
        metrics.writes.labels("edgeroute-status", "patch").inc()
    return wanted
