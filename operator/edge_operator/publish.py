"""Write the ConfigMaps runners read: server-side apply, only ConfigMaps the operator owns.

Called by the function and route reconcilers with a ConfigMap built by
:mod:`edge_api.wire` (which carries an ownerReference to the EdgeFunction or
EdgeRoute).  :func:`apply_configmap` reads the ConfigMap of that name first:

* absent: applied (created) with field manager ``edge-operator``, not forced,
  so one created meanwhile by someone else makes the apply fail, not merge;
* ours (:func:`ownership`: its controller is the very object): applied,
  forced, only if what the operator owns differs (:func:`differs`), so a
  second reconcile writes nothing;
* anyone else's: left alone, :class:`NotOwned` is raised and the reconciler
  reports it as a condition (reason ``ConfigMapNotOwned``).

:func:`delete_configmap` deletes only a ConfigMap owned by the object deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import ConfigMap
from lightkube.types import PatchType

from edge_api.k8s import status_code
from edge_operator.metrics import OperatorMetrics
from edge_operator.status import FIELD_MANAGER

log = logging.getLogger("edge_operator.publish")

_OWNED = ("data", "binaryData")
_OWNED_META = ("labels", "annotations", "ownerReferences")

Ownership = Literal["absent", "ours", "foreign"]


class NotOwned(Exception):
    """A ConfigMap with the name the operator needs exists and is not the operator's."""

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(f"configmap/{name} exists and is not owned by this object ({holder});"
                         " the operator leaves it alone: delete or rename it")
        self.name = name


def _controller(metadata: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return next((ref for ref in metadata.get("ownerReferences") or []
                 if ref.get("controller")), None)


def ownership(existing: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> Ownership:
    """Whose the ConfigMap ``existing`` is, for the operator about to write ``desired``.

    Ours only if its controller ownerReference is the very object (same uid)
    ``desired`` is owned by.  A ConfigMap left by a deleted object of the same
    name is foreign too: the garbage collector (or the operator's delete
    handler) removes it, and the next retry creates ours.
    """
    if existing is None:
        return "absent"
    want = _controller(desired.get("metadata") or {})
    have = _controller(existing.get("metadata") or {})
    if want is not None and have is not None and have.get("uid") == want.get("uid"):
        return "ours"
    return "foreign"


def describe_holder(existing: Mapping[str, Any]) -> str:
    """Who holds a foreign ConfigMap, for the message."""
    controller = _controller(existing.get("metadata") or {})
    if controller is None:
        return "it has no controller ownerReference"
    return f"controlled by {controller.get('kind')}/{controller.get('name')}" \
        f" uid {controller.get('uid')}"


def differs(existing: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True if a field the operator owns differs between ``existing`` and ``desired``.

    Owned: the keys of data and binaryData, the labels and annotations and the
    ownerReference it sets.  Keys others added are theirs (server-side apply
    keeps them), so they never count as a difference.
    """
    for key in _OWNED:
        have = existing.get(key) or {}
        if any(have.get(k) != v for k, v in (desired.get(key) or {}).items()):
            return True
    old_meta, new_meta = existing.get("metadata") or {}, desired.get("metadata") or {}
    for key in _OWNED_META:
        if key == "ownerReferences":
            refs = old_meta.get(key) or []
            if any(ref not in refs for ref in new_meta.get(key) or []):
                return True
        elif any((old_meta.get(key) or {}).get(k) != v
                 for k, v in (new_meta.get(key) or {}).items()):
            return True
    return False


async def _read(client: AsyncClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = await client.get(ConfigMap, name, namespace=namespace)
    except ApiError as exc:
        if status_code(exc) == 404:
            return None
        raise
    result: dict[str, Any] = found.to_dict()
    return result


async def apply_configmap(client: AsyncClient, desired: dict[str, Any],
                          metrics: OperatorMetrics) -> bool:
    """Create or update ``desired`` if needed; returns True when it wrote.

    Raises :class:`NotOwned` for a ConfigMap of that name that is not ours.
    """
    namespace = desired["metadata"]["namespace"]
    name = desired["metadata"]["name"]
    existing = await _read(client, namespace, name)
    owner = ownership(existing, desired)
    if existing is not None and owner == "foreign":
        raise NotOwned(name, describe_holder(existing))
    if existing is not None and not differs(existing, desired):
        return False
    try:
        await client.patch(ConfigMap, name, desired, namespace=namespace,
                           patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER,
                           force=owner == "ours")
    except ApiError as exc:
        if owner == "absent" and status_code(exc) == 409:  # created meanwhile by another
            raise NotOwned(name, "created by another writer meanwhile") from exc
        raise
    metrics.writes.labels("configmap", "create" if owner == "absent" else "replace").inc()
    return True


async def delete_configmap(client: AsyncClient, namespace: str, name: str, owner_uid: str,
                           metrics: OperatorMetrics) -> bool:
    """Delete the ConfigMap ``name`` if the object with ``owner_uid`` controls it."""
    existing = await _read(client, namespace, name)
    if existing is None:
        return False
    controller = _controller(existing.get("metadata") or {})
    if controller is None or controller.get("uid") != owner_uid:
        log.info("configmap %s is not owned by the deleted object (uid %s); left alone",
                 name, owner_uid)
        return False
    try:
        await client.delete(ConfigMap, name, namespace=namespace)
    except ApiError as exc:
        if status_code(exc) == 404:
            return False
        raise
    metrics.writes.labels("configmap", "delete").inc()
    return True
