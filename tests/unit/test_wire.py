"""The operator -> runner wire format (edge_api.wire): what the operator writes is what a
runner reads back, and a ConfigMap that is not exactly that is refused with a reason
(docs/resources.md, "ConfigMaps the operator writes")."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from edge_api.models import EdgeFunctionSpec, EdgeRouteSpec
from edge_api.wire import (
    MAX_MODULE_BYTES,
    FunctionConfig,
    RouteConfig,
    WireError,
    function_configmap,
    function_configmap_name,
    owner_reference,
    parse_configmap,
    route_configmap,
    route_configmap_name,
    spec_json,
)

MODULE = b"\x00asm\x01\x00\x00\x00" + bytes(range(256))
DIGEST = f"sha256:{hashlib.sha256(MODULE).hexdigest()}"
SPEC = EdgeFunctionSpec.model_validate({
    "source": {"inline": base64.b64encode(MODULE).decode()}, "abi": "wagi",
    "limits": {"memory": "32Mi", "timeout": "2s"}, "env": [{"name": "A", "value": "1"}]})
ROUTE = EdgeRouteSpec.model_validate({"rules": [{"match": {"path": "/x"}, "function": "fn"}]})
BODY = {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
        "metadata": {"name": "fn", "uid": "u-1"}}


def written(**changes: Any) -> dict[str, Any]:
    configmap = function_configmap(name="fn", namespace="ns", spec=SPEC, module=MODULE,
                                   owner=owner_reference(BODY))
    return {**configmap, **changes}


def test_a_function_configmap_as_the_operator_writes_it() -> None:
    configmap = written()
    assert configmap["metadata"] == {
        "name": "edgefn-fn", "namespace": "ns",
        "labels": {"edgerunner.dev/kind": "function", "edgerunner.dev/name": "fn",
                   "app.kubernetes.io/managed-by": "edge-operator"},
        "annotations": {"edgerunner.dev/digest": DIGEST},
        "ownerReferences": [{"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
                             "name": "fn", "uid": "u-1", "controller": True,
                             "blockOwnerDeletion": False}],
    }
    assert configmap["data"] == {"name": "fn", "spec.json": spec_json(SPEC), "digest": DIGEST}
    assert configmap["binaryData"] == {"module.wasm": base64.b64encode(MODULE).decode()}
    assert (configmap["apiVersion"], configmap["kind"]) == ("v1", "ConfigMap")
    without_owner = function_configmap(name="fn", namespace="ns", spec=SPEC, module=MODULE)
    assert "ownerReferences" not in without_owner["metadata"]


def test_what_the_operator_writes_a_runner_reads_back() -> None:
    parsed = parse_configmap(written())
    assert parsed == FunctionConfig("fn", SPEC, MODULE, DIGEST)
    route = parse_configmap(route_configmap(name="r", namespace="ns", spec=ROUTE))
    assert isinstance(route, RouteConfig)
    assert (route.name, route.spec) == ("r", ROUTE)


def test_spec_json_is_canonical() -> None:
    """Sorted, compact, the manifest's (camelCase) names, normalized values, no nulls."""
    text = spec_json(SPEC)
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    document = json.loads(text)
    assert (document["limits"]["timeout"], document["limits"]["maxRequestBytes"]) == (2.0, 2**20)
    assert set(document["source"]) == {"inline"}  # the other kinds of source are left out

    def values(node: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for value in node.values():
                yield from values(value)
        elif isinstance(node, list):
            for value in node:
                yield from values(value)
        else:
            yield node

    assert None not in list(values(document))
    assert EdgeFunctionSpec.model_validate_json(text) == SPEC


def test_the_module_size_limit_is_inclusive() -> None:
    at_limit = b"\x00" * MAX_MODULE_BYTES
    assert function_configmap(name="fn", namespace="ns", spec=SPEC, module=at_limit)
    with pytest.raises(WireError) as caught:
        function_configmap(name="fn", namespace="ns", spec=SPEC, module=at_limit + b"\x00")
    assert str(caught.value) == (f"module of {MAX_MODULE_BYTES + 1} bytes is over the"
                                 f" {MAX_MODULE_BYTES}-byte ConfigMap limit")


def test_object_names_fit_and_stay_distinct() -> None:
    assert (function_configmap_name("fn"), route_configmap_name("fn")) == (
        "edgefn-fn", "edgeroute-fn")
    exact = "a" * (253 - len("edgefn-"))
    assert function_configmap_name(exact) == f"edgefn-{exact}"  # exactly 253: kept
    long_a, long_b = "a" * 247, "a" * 246 + "b"
    names = {function_configmap_name(long_a), function_configmap_name(long_b)}
    assert len(names) == 2 and all(len(n) <= 253 for n in names)
    assert all(n.startswith("edgefn-" + "a" * 200 + "-") for n in names)
    assert len(function_configmap_name(long_a)) == len("edgefn-") + 200 + 1 + 16


def test_long_names_become_hashed_label_values() -> None:
    name = "f" * 64
    label = function_configmap(name=name, namespace="ns", spec=SPEC, module=MODULE
                               )["metadata"]["labels"]["edgerunner.dev/name"]
    assert label == hashlib.sha256(name.encode()).hexdigest()[:63]
    short = "f" * 63
    assert function_configmap(name=short, namespace="ns", spec=SPEC, module=MODULE
                              )["metadata"]["labels"]["edgerunner.dev/name"] == short


def broken(section: str, key: str, value: Any) -> dict[str, Any]:
    """A written function ConfigMap with ``value`` under ``section`` (``data``,
    ``binaryData`` or ``labels``) at ``key``; None removes the key."""
    configmap = copy.deepcopy(written())
    target = configmap["metadata"]["labels"] if section == "labels" else configmap[section]
    if value is None:
        del target[key]
    else:
        target[key] = value
    return configmap


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("data", "name", None, "configmap edgefn-fn: no `name` key"),
    ("data", "name", "", "configmap edgefn-fn: no `name` key"),
    ("data", "name", 7, "configmap edgefn-fn: no `name` key"),
    ("labels", "edgerunner.dev/kind", "other", "configmap edgefn-fn: unknown kind 'other'"),
    ("labels", "edgerunner.dev/kind", None, "configmap edgefn-fn: unknown kind None"),
    ("data", "spec.json", '{"abi": "edge"}', "configmap edgefn-fn: source: Field required"),
    ("data", "spec.json", None, "configmap edgefn-fn: "),
    ("binaryData", "module.wasm", None, "configmap edgefn-fn: no binaryData `module.wasm`"),
    ("binaryData", "module.wasm", base64.b64encode(b"other").decode(),
     "configmap edgefn-fn: module digest does not match"),
    ("data", "digest", None, "configmap edgefn-fn: module digest does not match"),
], ids=["no-name", "empty-name", "name-not-text", "unknown-kind", "no-kind", "bad-spec",
        "no-spec", "no-module", "other-module", "no-digest"])
def test_a_configmap_that_is_not_what_the_operator_writes_is_refused(
    section: str, key: str, value: Any, message: str
) -> None:
    with pytest.raises(WireError) as caught:
        parse_configmap(broken(section, key, value))
    assert str(caught.value).startswith(message), str(caught.value)


def test_an_empty_configmap_is_refused() -> None:
    with pytest.raises(WireError) as caught:
        parse_configmap({})
    assert str(caught.value) == "configmap None: no `name` key"


@pytest.mark.parametrize(("missing", "message"), [
    ("not json", "missing.json is not JSON"),
    ('{"a": 1}', "missing.json is not a list of names"),
    ('["a", 1]', "missing.json is not a list of names"),
])
def test_a_route_configmap_with_a_bad_missing_list_is_refused(missing: str, message: str
                                                             ) -> None:
    configmap = route_configmap(name="r", namespace="ns", spec=ROUTE)
    configmap["data"]["missing.json"] = missing
    with pytest.raises(WireError) as caught:
        parse_configmap(configmap)
    assert str(caught.value).startswith(f"configmap edgeroute-r: {message}"), caught.value
    configmap["data"]["missing.json"] = '["b", "a", "a"]'
    parsed = parse_configmap(configmap)
    assert isinstance(parsed, RouteConfig) and parsed.missing == frozenset({"a", "b"})


def test_a_route_configmap_as_the_operator_writes_it() -> None:
    body = {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": "r", "uid": "u-2"}}
    configmap = route_configmap(name="r", namespace="ns", spec=ROUTE, owner=owner_reference(body),
                                missing=["b", "a", "b"])
    assert configmap == {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": "edgeroute-r", "namespace": "ns",
            "labels": {"edgerunner.dev/kind": "route", "edgerunner.dev/name": "r",
                       "app.kubernetes.io/managed-by": "edge-operator"},
            "ownerReferences": [{"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
                                 "name": "r", "uid": "u-2", "controller": True,
                                 "blockOwnerDeletion": False}],
        },
        "data": {"name": "r", "route.json": spec_json(ROUTE), "missing.json": '["a","b"]'},
    }
    assert route_configmap(name="r", namespace="ns", spec=ROUTE)["data"]["missing.json"] == "[]"
    assert route_configmap_name("r" * 300).startswith("edgeroute-" + "r" * 200 + "-")
