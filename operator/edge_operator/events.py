"""Kubernetes Events about EdgeFunctions and EdgeRoutes (``kubectl describe``, ``get events``).

Called by :mod:`edge_operator.reconcile` and :mod:`edge_operator.routes` when a
status changes to a failure (and for route conflicts).  Written with the
operator's own client, so an event can be posted from any task: kopf's
``kopf.warn`` only works inside a kopf handler, and reconciles also run from
the ConfigMap watch and the resync loop.  A failed post is logged, never
raised: an event is a courtesy, the status is the record.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any, Final, Literal

from lightkube import AsyncClient
from lightkube.models.core_v1 import EventSource, ObjectReference
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event

from edge_api.constants import API_VERSION
from edge_api.k8s import KUBE_ERRORS

log = logging.getLogger("edge_operator.events")

COMPONENT: Final = "edge-operator"


def reference(obj: Mapping[str, Any], kind: str) -> ObjectReference:
    """The ``involvedObject`` of an event about ``obj``, one of our custom objects as a dict
    (items of a list lack ``apiVersion`` and ``kind``, hence ``kind``)."""
    metadata = obj.get("metadata") or {}
    return ObjectReference(apiVersion=API_VERSION, kind=kind,
                           name=metadata.get("name"), namespace=metadata.get("namespace"),
                           uid=metadata.get("uid"),
                           resourceVersion=metadata.get("resourceVersion"))


async def post(kube: AsyncClient, obj: Mapping[str, Any], reason: str, message: str, *,
               kind: str, type: Literal["Normal", "Warning"] = "Warning") -> bool:
    """Post one event about ``obj``; False (and a log line) if the API server refused it."""
    metadata = obj.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    now = datetime.datetime.now(datetime.UTC)
    event = Event(
        metadata=ObjectMeta(generateName=f"{name}.", namespace=namespace),
        involvedObject=reference(obj, kind),
        reason=reason, message=message[:1024], type=type,
        source=EventSource(component=COMPONENT), reportingComponent=COMPONENT,
        firstTimestamp=now, lastTimestamp=now, count=1,
    )
    try:
        await kube.create(event)
    except KUBE_ERRORS as exc:
        log.warning("could not post event %s: %s", reason, exc,
                    extra={"object": f"{namespace}/{name}", "kind": kind})
        return False
    return True
