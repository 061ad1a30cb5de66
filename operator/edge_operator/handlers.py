"""Every kopf handler of the operator, in one place; each is thin.

Handlers say *what* to reconcile; :class:`edge_operator.reconcile.Reconciler`
does it (reads the object afresh, reconciles under a per-object lock, applies
the status fields its writer owns, posts events) and kopf only carries its
progress annotations.  A transient failure is retried by kopf after the delay
the reconcile chose (``kopf.TemporaryError``).  Referenced ConfigMaps are
watched (:func:`configmap_event`, with the index :func:`functions_by_configmap`).
Two more kopf indexes, kept up to date by the watches, spare the handlers a list
of the namespace per event (with 1,000 objects, one list each is O(N²) API
reads for a bulk apply): the EdgeFunctions of each namespace
(:func:`function_names`, a route's missing functions) and the routes that name
each function (:func:`routes_by_function`).  kopf fills every index before any
handler runs; a route reconciled just before its function's watch event is
reconciled again by that event's handler, so the order of the two does not
matter.  Every EdgeFunction event also feeds the rollout tracker.  The periodic
resync is the reconciler's own loop, not a kopf timer, because kopf
puts a finalizer on every object of a resource that has a timer or daemon, and
a finalizer left by an uninstalled operator blocks deleting the objects and
the CRDs.  None of these handlers needs one.  Shared clients live in kopf's
``memo`` (:class:`Context`), set up by :mod:`edge_operator.cli`.
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
    LABEL_KIND,
    PLURAL_FUNCTION,
    PLURAL_ROUTE,
    VERSION,
)
from edge_api.k8s import authorization, load_config
from edge_api.wire import function_configmap_name, route_configmap_name
from edge_operator.config import OperatorConfig
from edge_operator.functions import retry_delay
from edge_operator.metrics import OperatorMetrics
from edge_operator.propagation import PropagationTracker
from edge_operator.publish import delete_configmap
from edge_operator.reconcile import Existing, Reconciler, named_functions
from edge_operator.rest import configmap_reference

log = logging.getLogger("edge_operator")
registry = kopf.OperatorRegistry()


@dataclass
class Context:
    """What handlers share (kopf's memo)."""

    kube: AsyncClient
    config: OperatorConfig
    metrics: OperatorMetrics
    tracker: PropagationTracker
    namespaces: list[str]
    reconciler: Reconciler = field(init=False)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reconciler = Reconciler(kube=self.kube, config=self.config, metrics=self.metrics)


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
    context.tasks.append(asyncio.create_task(
        context.reconciler.resync(context.namespaces, context.config.resync_interval),
        name="resync"))
    settings.posting.level = logging.WARNING
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300
    settings.watching.reconnect_backoff = 1.0
    # The namespaces are given (--namespace): no cluster-wide namespace list/watch,
    # which the chart's RBAC does not grant (and need not).
    settings.scanning.disabled = True


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
async def function_changed(body: kopf.Body, memo: kopf.Memo, retry: int = 0,
                           **_: Any) -> None:
    metadata = body["metadata"]
    outcome = await _context(memo).reconciler.function(metadata["namespace"], metadata["name"],
                                                       retry=retry)
    if outcome is not None and outcome.retry_after is not None:  # transient: kopf retries
        reason, message = outcome.warning or ("Retry", "")
        raise kopf.TemporaryError(f"{reason}: {message}", delay=outcome.retry_after)


@kopf.index(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
async def functions_by_configmap(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, ConfigMap name) -> the EdgeFunctions whose configMapRef names it."""
    name = configmap_reference(dict(body))
    metadata = body["metadata"]
    return {(metadata["namespace"], name): metadata["name"]} if name else {}


@kopf.on.event("", "v1", "configmaps", labels={LABEL_KIND: kopf.ABSENT}, registry=registry)
async def configmap_event(event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any) -> None:
    """A ConfigMap changed: reconcile the EdgeFunctions that read their module from it.

    ConfigMaps the operator writes (labelled ``edgerunner.dev/kind``) are handled by
    :func:`published_configmap_event`.  Every resourceVersion is noted for the resync
    (:mod:`edge_operator.rest`).
    kopf passes the index :func:`functions_by_configmap` by its name.
    """
    index: kopf.Index[tuple[str, str], str] = kwargs["functions_by_configmap"]
    metadata = event["object"]["metadata"]
    key = (metadata["namespace"], metadata["name"])
    reconciler = _context(memo).reconciler
    reconciler.rest.configmap_seen(key[0], key[1], None if event["type"] == "DELETED"
                                   else metadata.get("resourceVersion"))
    if key in index:
        await reconciler.functions_using(key[0], key[1], list(index[key]))


@kopf.on.event("", "v1", "configmaps", labels={LABEL_KIND: kopf.PRESENT}, registry=registry)
async def published_configmap_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A ConfigMap the operator writes was listed, changed or deleted: the reconciler
    notes it (its resync skips what is unchanged) and repairs one someone deleted or
    edited (:meth:`~edge_operator.reconcile.Reconciler.published_changed`)."""
    await _context(memo).reconciler.published_changed(event["object"],
                                                      deleted=event["type"] == "DELETED")


@kopf.index(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
async def function_names(body: kopf.Body, **_: Any) -> dict[str, str]:
    """namespace -> the EdgeFunctions there that are not being deleted."""
    metadata = body["metadata"]
    return {} if metadata.get("deletionTimestamp") else {metadata["namespace"]: metadata["name"]}


def _existing(kwargs: dict[str, Any], namespace: str) -> Existing:
    """The namespace's EdgeFunctions, from the index :func:`function_names` when called."""
    index: kopf.Index[str, str] = kwargs["function_names"]
    return lambda: set(index[namespace]) if namespace in index else set()


@kopf.on.event(GROUP, VERSION, PLURAL_FUNCTION, registry=registry)
async def function_event(event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any) -> None:
    """Every change goes to the rollout tracker.  A function appeared or went: the
    routes that name it (index :func:`routes_by_function`) are reconciled again, so
    their readiness follows; on deletion, its ConfigMap is removed now (owner
    references make the garbage collector do it too)."""
    context = _context(memo)
    context.tracker.function_event(str(event["type"]), event["object"])
    if event["type"] not in ("ADDED", "DELETED"):
        return
    metadata = event["object"]["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    if event["type"] == "DELETED":
        await delete_configmap(context.kube, namespace, function_configmap_name(name),
                               metadata["uid"], context.metrics)
    index: kopf.Index[tuple[str, str], str] = kwargs["routes_by_function"]
    routes = list(index[namespace, name]) if (namespace, name) in index else []
    if routes:
        await context.reconciler.routes_to(namespace, routes, _existing(kwargs, namespace))


# -- EdgeRoute ---------------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
@kopf.on.create(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
@kopf.on.update(GROUP, VERSION, PLURAL_ROUTE, field="spec", registry=registry)
async def route_changed(body: kopf.Body, memo: kopf.Memo, retry: int = 0,
                        **kwargs: Any) -> None:
    context = _context(memo)
    metadata = body["metadata"]
    reconciler = context.reconciler
    ready = await reconciler.route(metadata["namespace"], metadata["name"],
                                   existing=_existing(kwargs, metadata["namespace"]))
    await reconciler.conflicts.sync(metadata["namespace"], kube=context.kube,
                                    metrics=context.metrics)
    if ready is not None and ready.reason == "ConfigMapNotOwned":
        raise kopf.TemporaryError(ready.message, delay=retry_delay(retry))


@kopf.index(GROUP, VERSION, PLURAL_ROUTE, registry=registry)
async def routes_by_function(body: kopf.Body, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, function) -> the EdgeRoutes (not being deleted) that name it."""
    metadata = body["metadata"]
    if metadata.get("deletionTimestamp"):
        return {}
    return {(metadata["namespace"], function): metadata["name"]
            for function in named_functions(dict(body))}


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
    await context.reconciler.conflicts.sync(metadata["namespace"], kube=context.kube,
                                            metrics=context.metrics)
