"""Every kopf handler of the operator, in one place; each is thin.

Handlers read the object, call the reconcilers (:mod:`edge_operator.functions`,
:mod:`edge_operator.routes`) and apply the status fields their writer owns
(:mod:`edge_operator.status`: server-side apply, one field manager per writer;
kopf's own patch carries only its progress annotations), and only when they
changed, so an unchanged object reconciles without a single write.  A
transient failure is retried by kopf after the delay the reconcile chose
(``kopf.TemporaryError``).  Shared clients live in kopf's ``memo``
(:class:`Context`), set up by :mod:`edge_operator.cli`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from lightkube import AsyncClient

from edge_api.constants import (
    GROUP,
    KIND_FUNCTION,
    KIND_ROUTE,
    LABEL_KIND,
    PLURAL_FUNCTION,
    PLURAL_ROUTE,
    VERSION,
)
from edge_api.k8s import authorization, load_config
from edge_api.wire import function_configmap_name, route_configmap_name
from edge_operator.config import RESYNC_SECONDS, OperatorConfig
from edge_operator.functions import reconcile_function, retry_delay
from edge_operator.metrics import OperatorMetrics
from edge_operator.propagation import PropagationTracker
from edge_operator.publish import delete_configmap
from edge_operator.routes import ConflictSync, reconcile_route
from edge_operator.status import FIELD_MANAGER, apply_status, function_status, route_status
from edge_operator.validation import ValidationCache

log = logging.getLogger("edge_operator")
registry = kopf.OperatorRegistry()


@dataclass
class Context:
    """What handlers share (kopf's memo)."""

    kube: AsyncClient
    config: OperatorConfig
    metrics: OperatorMetrics
    tracker: PropagationTracker
    validations: ValidationCache = field(default_factory=ValidationCache)
    conflicts: ConflictSync = field(default_factory=ConflictSync)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _context(memo: Any) -> Context:
    context = memo.context
    assert isinstance(context, Context)
    return context


@kopf.on.login(registry=registry)
async def login(**_: Any) -> kopf.ConnectionInfo:
    """Credentials for kopf's own client, from the same config as ours.

    Called again by kopf when the API server answers 401, so short-lived
    tokens (exec plugins, rotated service-account tokens) are fetched anew.
    """
    config = load_config()
    cluster, user = config.cluster, config.user
    header = await authorization(config)
    scheme, _space, token = (header or "").partition(" ")
    return kopf.ConnectionInfo(
        server=cluster.server,
        ca_path=str(config.abs_file(cluster.certificate_auth))
        if cluster.certificate_auth else None,
        ca_data=cluster.certificate_auth_data,
        insecure=cluster.insecure,
        scheme=scheme or None,
        token=token or None,
        certificate_path=str(config.abs_file(user.client_cert))
        if user and user.client_cert and not user.client_cert_data else None,
        certificate_data=user.client_cert_data if user else None,
        private_key_path=str(config.abs_file(user.client_key))
        if user and user.client_key and not user.client_key_data else None,
        private_key_data=user.client_key_data if user else None,
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
async def function_changed(body: kopf.Body, memo: kopf.Memo, retry: int = 0,
                           **_: Any) -> None:
    context = _context(memo)
    metadata = body["metadata"]
    with context.metrics.duration.labels("function").time():
        outcome = await reconcile_function(dict(body), kube=context.kube,
                                           config=context.config, metrics=context.metrics,
                                           validations=context.validations, retry=retry)
        status = function_status(body.get("status"), outcome.fields, outcome.conditions,
                                 metadata.get("generation"))
        if status is not None:
            await apply_status(context.kube, KIND_FUNCTION, name=metadata["name"],
                               namespace=metadata["namespace"], status=status,
                               manager=FIELD_MANAGER, metrics=context.metrics)
    context.metrics.reconciles.labels("function", outcome.result).inc()
    if status is not None:
        context.tracker.wake.set()
    if outcome.warning is not None and status is not None:
        reason, message = outcome.warning
        kopf.warn(body, reason=reason, message=message)
    if outcome.retry_after is not None:  # transient: kopf calls this handler again then
        reason, message = outcome.warning or ("Retry", "")
        raise kopf.TemporaryError(f"{reason}: {message}", delay=outcome.retry_after)


@kopf.on.event(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
async def function_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """On deletion, remove its ConfigMap now (owner references make GC do it too)."""
    if event["type"] != "DELETED":
        return
    context = _context(memo)
    metadata = event["object"]["metadata"]
    await delete_configmap(context.kube, metadata["namespace"],
                           function_configmap_name(metadata["name"]), metadata["uid"],
                           context.metrics)


# -- EdgeRoute ---------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL_ROUTE, field="spec", registry=registry)
async def route_changed(body: kopf.Body, memo: kopf.Memo, retry: int = 0,
                        **_: Any) -> None:
    context = _context(memo)
    metadata = body["metadata"]
    with context.metrics.duration.labels("route").time():
        ready = await reconcile_route(dict(body), kube=context.kube, metrics=context.metrics)
        status = route_status(body.get("status"), ready, metadata.get("generation"))
        if status is not None:
            await apply_status(context.kube, KIND_ROUTE, name=metadata["name"],
                               namespace=metadata["namespace"], status=status,
                               manager=FIELD_MANAGER, metrics=context.metrics)
        await context.conflicts.sync(metadata["namespace"], kube=context.kube,
                                     metrics=context.metrics)
    context.metrics.reconciles.labels(
        "route", "ok" if ready.status else "error" if ready.reason == "ConfigMapNotOwned"
        else "invalid").inc()
    if ready.reason == "ConfigMapNotOwned":
        if status is not None:
            kopf.warn(body, reason=ready.reason, message=ready.message)
        raise kopf.TemporaryError(ready.message, delay=retry_delay(retry))


@kopf.on.event(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
async def route_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """On deletion, drop its ConfigMap and clear conflicts this route caused."""
    if event["type"] != "DELETED":
        return
    context = _context(memo)
    metadata = event["object"]["metadata"]
    await delete_configmap(context.kube, metadata["namespace"],
                           route_configmap_name(metadata["name"]), metadata["uid"],
                           context.metrics)
    await context.conflicts.sync(metadata["namespace"], kube=context.kube,
                                 metrics=context.metrics)
