"""Write the ConfigMaps runners read, only when they differ (idempotent reconciles).

Called by the function and route reconcilers with a ConfigMap built by
:mod:`edge_api.wire`.  A ConfigMap is compared on what the operator owns
(data, binaryData, labels, annotations, ownerReferences); an equal one is left
alone, so a second reconcile writes nothing.
"""

from __future__ import annotations

from typing import Any

from edge_api.kube import Conflict, KubeClient, NotFound, resource_path
from edge_operator.metrics import OperatorMetrics

_OWNED = ("data", "binaryData")
_OWNED_META = ("labels", "annotations", "ownerReferences")


def _differs(existing: dict[str, Any], desired: dict[str, Any]) -> bool:
    for key in _OWNED:
        if (existing.get(key) or {}) != (desired.get(key) or {}):
            return True
    old_meta, new_meta = existing.get("metadata") or {}, desired.get("metadata") or {}
    for key in _OWNED_META:
        wanted = new_meta.get(key)
        if key == "ownerReferences":
            if (old_meta.get(key) or []) != (wanted or []):
                return True
        elif any((old_meta.get(key) or {}).get(k) != v for k, v in (wanted or {}).items()):
            return True
    return False


async def apply_configmap(kube: KubeClient, desired: dict[str, Any],
                          metrics: OperatorMetrics) -> bool:
    """Create or replace ``desired`` if needed; returns True when it wrote."""
    namespace = desired["metadata"]["namespace"]
    name = desired["metadata"]["name"]
    path = resource_path("", "v1", "configmaps", namespace, name)
    for _attempt in range(3):
        try:
            existing = await kube.get(path)
        except NotFound:
            await kube.create(resource_path("", "v1", "configmaps", namespace), desired)
            metrics.writes.labels("configmap", "create").inc()
            return True
        if not _differs(existing, desired):
            return False
        body = dict(desired)
        metadata = dict(desired["metadata"])
        metadata["resourceVersion"] = existing["metadata"]["resourceVersion"]
        body["metadata"] = metadata
        try:
            await kube.replace(path, body)
        except Conflict:
            continue
        metrics.writes.labels("configmap", "replace").inc()
        return True
    raise RuntimeError(f"configmap {name} kept changing while it was being written")


async def delete_configmap(kube: KubeClient, namespace: str, name: str,
                           metrics: OperatorMetrics) -> None:
    try:
        await kube.delete(resource_path("", "v1", "configmaps", namespace, name))
    except NotFound:
        return
    metrics.writes.labels("configmap", "delete").inc()
