"""Which ConfigMaps the operator may write and when (edge_operator.publish), in process:
ownership by controller reference and the comparison on owned fields only."""

from __future__ import annotations

import copy
from typing import Any

from edge_api.models import EdgeRouteSpec
from edge_api.wire import owner_reference, route_configmap
from edge_operator.publish import NotOwned, describe_holder, differs, ownership

ROUTE: dict[str, Any] = {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
                         "metadata": {"name": "r", "namespace": "ns", "uid": "uid-1"}}
SPEC = EdgeRouteSpec.model_validate({"rules": [{"match": {"path": "/r"}, "function": "f"}]})


def desired(uid: str = "uid-1") -> dict[str, Any]:
    body = copy.deepcopy(ROUTE)
    body["metadata"]["uid"] = uid
    return route_configmap(name="r", namespace="ns", spec=SPEC, owner=owner_reference(body))


def stored(**changes: Any) -> dict[str, Any]:
    """``desired()`` as the API server returns it, with ``changes`` merged into metadata."""
    body = desired()
    body["metadata"].update(resourceVersion="7", uid="cm-uid", **changes)
    return body


def test_absent_ours_and_foreign() -> None:
    assert ownership(None, desired()) == "absent"
    assert ownership(stored(), desired()) == "ours"
    assert ownership(stored(ownerReferences=[]), desired()) == "foreign"
    other = [{**owner_reference(ROUTE), "uid": "uid-0"}]
    # A ConfigMap left by a deleted route of the same name is not adopted.
    assert ownership(stored(ownerReferences=other), desired()) == "foreign"
    not_controller = [{**owner_reference(ROUTE), "controller": False}]
    assert ownership(stored(ownerReferences=not_controller), desired()) == "foreign"


def test_foreign_holder_is_described() -> None:
    assert "no controller" in describe_holder(stored(ownerReferences=[]))
    held = stored(ownerReferences=[{**owner_reference(ROUTE), "uid": "uid-0",
                                    "kind": "Deployment", "name": "web"}])
    assert describe_holder(held) == "controlled by Deployment/web uid uid-0"
    message = str(NotOwned("edgeroute-r", describe_holder(held)))
    assert message.startswith("configmap/edgeroute-r exists and is not owned by this object")


def test_equal_configmap_does_not_differ() -> None:
    assert not differs(stored(), desired())


def test_what_others_added_is_not_a_difference() -> None:
    existing = stored()
    existing["data"]["note"] = "added by someone"
    existing["metadata"]["labels"]["team"] = "a"
    existing["metadata"]["annotations"] = {"x": "y"}
    existing["metadata"]["ownerReferences"].append(
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "u2"})
    assert not differs(existing, desired())


def test_changed_owned_fields_differ() -> None:
    changed_data = stored()
    changed_data["data"]["route.json"] = "{}"
    assert differs(changed_data, desired())
    lost_label = stored()
    del lost_label["metadata"]["labels"]["edgerunner.dev/kind"]
    assert differs(lost_label, desired())
    new_owner = stored()
    assert differs(new_owner, desired(uid="uid-2"))
    function_cm = stored()
    wanted = desired()
    wanted["binaryData"] = {"module.wasm": "AAAA"}
    assert differs(function_cm, wanted)
