"""EdgeFunction / EdgeRoute models: defaults, normalization and errors that name the field."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import AfterValidator, BaseModel, ValidationError

from edge_api import EdgeFunction, EdgeRoute, ManifestError, parse_manifest
from edge_api.models import Backend, EdgeRouteSpec, Rule, Source, describe_validation_error


def function(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
            "metadata": {"name": "f"}, "spec": spec}


def route(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": "r"}, "spec": spec}


def test_function_defaults() -> None:
    parsed = parse_manifest(function({"source": {"path": "a.wasm"}}))
    assert isinstance(parsed, EdgeFunction)
    spec = parsed.spec
    assert spec.abi == "edge"
    assert spec.limits.memory == 64 * 2**20
    assert spec.limits.timeout == 1.0
    assert spec.limits.fuel == 0
    assert spec.limits.max_request_bytes == 2**20
    assert spec.limits.max_response_bytes == 8 * 2**20
    assert spec.pool.reuse is True
    assert spec.pool.max_instances == 8
    assert spec.pool.idle_timeout == 300.0


def test_normalized_spec_round_trips() -> None:
    parsed = parse_manifest(function({
        "source": {"configMapRef": {"name": "m"}}, "abi": "wagi",
        "limits": {"memory": "16Mi", "timeout": "250ms", "fuel": 1000},
        "env": [{"name": "A", "value": "1"}], "pool": {"reuse": False, "idleTimeout": "1m"},
    }))
    assert isinstance(parsed, EdgeFunction)
    dumped = parsed.spec.model_dump(by_alias=True, exclude_none=True)
    assert dumped["limits"]["memory"] == 16 * 2**20
    assert dumped["source"] == {"configMapRef": {"name": "m", "key": "module.wasm"}}
    again = parse_manifest(function(dumped))
    assert isinstance(again, EdgeFunction)
    assert again.spec == parsed.spec


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"source": {}}, "spec.source"),
        ({"source": {"path": "a", "inline": "AA=="}}, "spec.source"),
        ({"source": {"inline": "not base64!"}}, "spec.source.inline"),
        ({"source": {"path": "a"}, "abi": "cgi"}, "spec.abi"),
        ({"source": {"path": "a"}, "limits": {"memory": "64MB"}}, "spec.limits.memory"),
        ({"source": {"path": "a"}, "limits": {"timeout": "soon"}}, "spec.limits.timeout"),
        ({"source": {"path": "a"}, "limits": {"fuel": -1}}, "spec.limits.fuel"),
        ({"source": {"path": "a"}, "env": [{"name": "1X"}]}, "spec.env.0.name"),
        ({"source": {"path": "a"}, "env": [{"name": "A"}, {"name": "A"}]}, "spec.env"),
        ({"source": {"path": "a"}, "pool": {"maxInstances": 0}}, "spec.pool.maxInstances"),
        ({"source": {"url": {"url": "ftp://x", "sha256": "0" * 64}}}, "spec.source.url.url"),
        ({"source": {"path": "a"}, "extra": 1}, "spec.extra"),
    ],
)
def test_function_errors_name_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(function(spec))
    assert f"{field}:" in str(caught.value)


def test_route_targets_and_errors() -> None:
    parsed = parse_manifest(route({"rules": [{"match": {"path": "/a"}, "backends": [
        {"function": "a", "weight": 90}, {"function": "b", "weight": 10}]}]}))
    assert isinstance(parsed, EdgeRoute)
    assert [b.function for b in parsed.spec.rules[0].targets()] == ["a", "b"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rules": []}, "spec.rules"),
        ({"rules": [{"match": {"path": "a"}, "function": "f"}]}, "spec.rules.0.match.path"),
        ({"rules": [{"match": {"path": "/a"}}]}, "spec.rules.0"),
        ({"rules": [{"match": {"path": "/a"}, "function": "f", "backends": [{"function": "g"}]}]},
         "spec.rules.0"),
        ({"rules": [{"match": {"path": "/a", "methods": ["FETCH"]}, "function": "f"}]},
         "spec.rules.0.match.methods.0"),
        ({"rules": [{"match": {"path": "/a/{x", "pathType": "Template"}, "function": "f"}]},
         "spec.rules.0.match"),
        ({"hosts": ["Bad_Host"], "rules": [{"match": {"path": "/"}, "function": "f"}]},
         "spec.hosts.0"),
    ]
    for spec, field in cases:
        with pytest.raises(ManifestError) as caught:
            parse_manifest(route(spec))
        assert f"{field}:" in str(caught.value), (spec, str(caught.value))


def test_wrong_kind_or_version() -> None:
    with pytest.raises(ManifestError, match="apiVersion"):
        parse_manifest({"apiVersion": "v1", "kind": "EdgeFunction"})
    with pytest.raises(ManifestError, match="kind"):
        parse_manifest({"apiVersion": "edgerunner.dev/v1alpha1", "kind": "Pod"})
    with pytest.raises(ManifestError, match="mapping"):
        parse_manifest(["not", "a", "mapping"])


def test_manifest_errors_say_what_and_which_object() -> None:
    with pytest.raises(ManifestError) as mapping:
        parse_manifest(["a", "list"])
    assert str(mapping.value) == "manifest must be a mapping, got list"
    bad = {"source": {"path": "a"}, "limits": {"memory": "lots", "timeout": "soon"}}
    with pytest.raises(ManifestError) as named:
        parse_manifest(function(bad))
    assert str(named.value) == (
        "EdgeFunction f: spec.limits.memory: not a quantity (expected e.g. 64Mi, 1G, 1048576):"
        " 'lots'; spec.limits.timeout: not a duration (expected e.g. 500ms, 1s, 5m, 1m30s):"
        " 'soon'")
    metadatas: list[dict[str, Any]] = [{}, {"metadata": None}, {"metadata": {}}]
    for metadata in metadatas:
        document = {**function(bad), **metadata}
        if not metadata:
            del document["metadata"]
        with pytest.raises(ManifestError) as unnamed:
            parse_manifest(document)
        assert str(unnamed.value).startswith("EdgeFunction ?: "), str(unnamed.value)


def test_validation_errors_read_as_field_paths() -> None:
    def positive(value: int) -> int:
        if value <= 0:
            raise ValueError("must be positive")
        return value

    class Tagged(BaseModel):
        x: Annotated[int, AfterValidator(positive)] | Annotated[str, AfterValidator(str.upper)]

    with pytest.raises(ValidationError) as union:  # pydantic tags union members in the loc
        Tagged.model_validate({"x": -1})
    assert describe_validation_error(union.value) == (
        "x: must be positive; x: Input should be a valid string")
    with pytest.raises(ValidationError) as whole:  # a model-level error has no location
        Source.model_validate({"inline": "AAAA", "path": "m.wasm"})
    assert describe_validation_error(whole.value) == (
        "exactly one of inline, configMapRef, url, oci, path must be set (got 2)")


def test_a_single_function_is_one_backend_of_weight_one() -> None:
    single = Rule.model_validate({"match": {"path": "/"}, "function": "f"})
    spelled = Rule.model_validate({"match": {"path": "/"}, "backends": [{"function": "f"}]})
    assert single.targets() == spelled.targets() == [Backend(function="f", weight=1)]


def test_a_route_names_its_functions_once_in_rule_order() -> None:
    spec = EdgeRouteSpec.model_validate({"rules": [
        {"match": {"path": "/b"}, "function": "b"},
        {"match": {"path": "/a"}, "backends": [{"function": "a"}, {"function": "b"}]},
        {"match": {"path": "/c"}, "backends": [{"function": "c", "weight": 0},
                                               {"function": "a"}]},
    ]})
    assert spec.function_names() == ["b", "a", "c"]


def test_equal_limits_and_pools_are_one_object_and_dump_as_written() -> None:
    def spec(path: str, limits: dict[str, Any], pool: dict[str, Any]) -> Any:
        parsed = parse_manifest(function({"source": {"path": path}, "limits": limits,
                                          "pool": pool}))
        assert isinstance(parsed, EdgeFunction)
        return parsed.spec

    a = spec("a.wasm", {"memory": "1Mi"}, {"maxInstances": 2})
    b = spec("b.wasm", {"memory": 1048576}, {"maxInstances": 2})
    assert a.limits is b.limits and a.pool is b.pool and a.source != b.source
    # Equal values written differently (a default given explicitly) stay apart, so what
    # a dump of the fields set says does not depend on another function's manifest.
    c = spec("c.wasm", {"memory": "1Mi", "timeout": "1s"}, {"maxInstances": 2, "reuse": True})
    assert c.limits == a.limits and c.limits is not a.limits and c.pool is not a.pool
    assert a.model_dump(by_alias=True, exclude_unset=True)["limits"] == {"memory": 1048576}
    assert c.model_dump(by_alias=True, exclude_unset=True)["limits"] == {
        "memory": 1048576, "timeout": 1.0}
    # Another value is another object; the shared one is unchanged.
    d = spec("d.wasm", {"memory": "2Mi"}, {"maxInstances": 2})
    assert d.limits is not a.limits and a.limits.memory == 2**20 and d.limits.memory == 2**21
