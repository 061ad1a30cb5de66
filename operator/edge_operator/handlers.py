"""Every kopf handler of the operator, in one place; each is thin.

Handlers read the object, call the reconcilers (:mod:`edge_operator.functions`,
:mod:`edge_operator.routes`) and patch only the status fields that changed, so
an unchanged object reconciles without a single write.  Shared clients live
in kopf's ``memo`` (:class:`Context`), set up by :func:`startup`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf

from edge_api.constants import GROUP, LABEL_KIND, PLURAL_FUNCTION, PLURAL_ROUTE, VERSION
from edge_api.kube import KubeClient, load_config
from edge_api.wire import function_configmap_name, route_configmap_name
from edge_operator.conditions import Want, merge
from edge_operator.config import RESYNC_SECONDS, OperatorConfig
from edge_operator.functions import reconcile_function
from edge_operator.metrics import OperatorMetrics
from edge_operator.propagation import PropagationTracker
from edge_operator.publish import delete_configmap
from edge_operator.routes import reconcile_route, sync_conflicts

log = logging.getLogger("edge_operator")
registry = kopf.OperatorRegistry()


@dataclass
class Context:
    """What handlers share (kopf's memo)."""

    kube: KubeClient
    config: OperatorConfig
    metrics: OperatorMetrics
    tracker: PropagationTracker
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _context(memo: Any) -> Context:
    context = memo.context
    assert isinstance(context, Context)
    return context


@kopf.on.login(registry=registry)
async def login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials for kopf's own client, from the same config as ours."""
    config = load_config()
    return kopf.ConnectionInfo(
        server=config.server,
        ca_path=config.ca_file,
        insecure=config.insecure,
        token=config.bearer(),
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        default_namespace=config.namespace,
    )


@kopf.on.startup(registry=registry)
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    context = _context(memo)
    context.tasks.append(asyncio.create_task(context.tracker.run(), name="propagation"))
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.reconnect_backoff = 1.0


def _patch_status(body: Any, patch: Any, fields: dict[str, Any], wants: list[Want]) -> bool:
    """Set the status fields and conditions that differ; returns True if any did."""
    status = dict(body.get("status") or {})
    generation = body["metadata"].get("generation")
    desired = {
        **fields,
        "observedGeneration": generation,
        "conditions": merge(status.get("conditions"), wants, generation),
    }
    changes = {key: value for key, value in desired.items() if status.get(key) != value}
    for key, value in changes.items():
        patch.status[key] = value
    return bool(changes)


@kopf.on.cleanup(registry=registry)
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    for task in _context(memo).tasks:
        task.cancel()
    await asyncio.gather(*_context(memo).tasks, return_exceptions=True)


@kopf.on.event("coordination.k8s.io", "v1", "leases", labels={LABEL_KIND: "runner"},
               registry=registry)
async def runner_lease_event(memo: kopf.Memo, **_: Any) -> None:
    """A runner registered, renewed, changed what it serves, or left: recount."""
    _context(memo).tracker.wake.set()


# -- EdgeFunction ------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL_FUNCTION, field="spec", registry=registry)
@kopf.timer(GROUP, VERSION, PLURAL_FUNCTION, interval=RESYNC_SECONDS,
            initial_delay=RESYNC_SECONDS, registry=registry)
async def function_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                           **_: Any) -> None:
    context = _context(memo)
    with context.metrics.duration.labels("function").time():
        outcome = await reconcile_function(dict(body), kube=context.kube,
                                           config=context.config, metrics=context.metrics)
    changed = _patch_status(body, patch, outcome.fields, outcome.conditions)
    context.metrics.reconciles.labels("function", outcome.result).inc()
    if changed:
        context.tracker.wake.set()
    if outcome.warning is not None and changed:
        reason, message = outcome.warning
        kopf.warn(body, reason=reason, message=message)


@kopf.on.event(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
async def function_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """On deletion, remove the ConfigMap now (owner references make GC do it too)."""
    if event["type"] != "DELETED":
        return
    context = _context(memo)
    metadata = event["object"]["metadata"]
    await delete_configmap(context.kube, metadata["namespace"],
                           function_configmap_name(metadata["name"]), context.metrics)


# -- EdgeRoute ---------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL_ROUTE, field="spec", registry=registry)
async def route_changed(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                        **_: Any) -> None:
    context = _context(memo)
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    with context.metrics.duration.labels("route").time():
        wants = await reconcile_route(dict(body), kube=context.kube, metrics=context.metrics)
        conflicts = await sync_conflicts(namespace, kube=context.kube,
                                         metrics=context.metrics, skip=name)
    conflict = conflicts.get(name) or Want("Conflict", False, "NoConflict", "")
    changed = _patch_status(body, patch, {}, [*wants, conflict])
    ready = wants[0]
    context.metrics.reconciles.labels("route", "ok" if ready.status else "invalid").inc()
    if changed and conflict.status:
        kopf.warn(body, reason="RulesConflict", message=conflict.message)


@kopf.on.event(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
async def route_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """On deletion, drop the ConfigMap and clear conflicts this route caused."""
    if event["type"] != "DELETED":
        return
    context = _context(memo)
    metadata = event["object"]["metadata"]
    await delete_configmap(context.kube, metadata["namespace"],
                           route_configmap_name(metadata["name"]), context.metrics)
    await sync_conflicts(metadata["namespace"], kube=context.kube, metrics=context.metrics)
