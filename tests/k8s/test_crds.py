"""The CRDs in crds/ against a real API server: valid manifests are accepted
and defaulted, bad ones are refused with a message naming the field
(docs/resources.md), and the short names, category and columns work."""

from __future__ import annotations

import base64
import copy
import json
import subprocess
from typing import Any

import pytest

from support.k8s import Cluster

pytestmark = pytest.mark.k8s

Manifest = dict[str, Any]
WASM_HEADER = base64.b64encode(b"\0asm\x01\0\0\0").decode()
SHA = "a" * 64


def function(name: str = "hello", **spec: Any) -> Manifest:
    body: Manifest = {"source": {"inline": WASM_HEADER}}
    body.update(spec)
    return {
        "apiVersion": "edgerunner.dev/v1alpha1",
        "kind": "EdgeFunction",
        "metadata": {"name": name},
        "spec": body,
    }


def route(name: str = "hello", **spec: Any) -> Manifest:
    body: Manifest = {"rules": [{"match": {"path": "/hello"}, "function": "hello"}]}
    body.update(spec)
    return {
        "apiVersion": "edgerunner.dev/v1alpha1",
        "kind": "EdgeRoute",
        "metadata": {"name": name},
        "spec": body,
    }


def with_rule(**rule: Any) -> Manifest:
    """A route whose single rule is /hello -> hello, changed by ``rule``."""
    manifest = route()
    manifest["spec"]["rules"][0].update(rule)
    return manifest


def with_match(**match: Any) -> Manifest:
    manifest = route()
    manifest["spec"]["rules"][0]["match"].update(match)
    return manifest


def apply(cluster: Cluster, namespace: str, manifest: Manifest) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl(
        "apply", "--validate=strict", "-n", namespace, "-f", "-",
        input=json.dumps(manifest), check=False,
    )  # fmt: skip


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> Manifest:
    out = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json").stdout
    result: Manifest = json.loads(out)
    return result


def test_valid_function_is_accepted_and_defaulted(
    cluster: Cluster, crds: list[str], namespace: str
) -> None:
    apply(cluster, namespace, function(env=[{"name": "GREETING", "value": "hi"}, {"name": "E"}]))
    spec = get(cluster, namespace, "edgefunction", "hello")["spec"]
    assert spec["source"] == {"inline": WASM_HEADER}
    assert spec["abi"] == "edge"
    assert spec["limits"] == {
        "memory": "64Mi",
        "timeout": "1s",
        "fuel": 0,
        "maxRequestBytes": "1Mi",
        "maxResponseBytes": "8Mi",
    }
    assert spec["pool"] == {"reuse": True, "maxInstances": 8, "idleTimeout": "5m"}
    assert spec["env"] == [{"name": "GREETING", "value": "hi"}, {"name": "E", "value": ""}]


def test_explicit_values_are_kept(cluster: Cluster, crds: list[str], namespace: str) -> None:
    limits = {
        "memory": 134217728,
        "timeout": "1m30s",
        "fuel": 1000000,
        "maxRequestBytes": "512Ki",
        "maxResponseBytes": "1.5Mi",
    }
    pool = {"reuse": False, "maxInstances": 1024, "idleTimeout": "250ms"}
    result = apply(cluster, namespace, function(abi="wagi", limits=limits, pool=pool))
    assert result.returncode == 0, result.stderr
    spec = get(cluster, namespace, "ef", "hello")["spec"]
    assert (spec["abi"], spec["limits"], spec["pool"]) == ("wagi", limits, pool)


SOURCES = [
    pytest.param(
        {"configMapRef": {"name": "mods"}},
        {"configMapRef": {"name": "mods", "key": "module.wasm"}},
        id="configMapRef",
    ),
    pytest.param({"url": {"url": "https://example.com/m.wasm", "sha256": SHA}}, None, id="url"),
    pytest.param(
        {"oci": {"ref": "ghcr.io/acme/hello:1.0", "pullSecretRef": {"name": "regcred"}}},
        None,
        id="oci-tag",
    ),
    pytest.param({"oci": {"ref": f"localhost:5000/hello@sha256:{SHA}"}}, None, id="oci-digest"),
    pytest.param({"path": "hello_world.wasm"}, None, id="path"),
]


@pytest.mark.parametrize(("source", "stored"), SOURCES)
def test_each_source_kind_is_accepted(
    cluster: Cluster, crds: list[str], namespace: str, source: Manifest, stored: Manifest | None
) -> None:
    result = apply(cluster, namespace, function(source=source))
    assert result.returncode == 0, result.stderr
    assert get(cluster, namespace, "ef", "hello")["spec"]["source"] == (stored or source)


def test_valid_route_is_accepted_and_defaulted(
    cluster: Cluster, crds: list[str], namespace: str
) -> None:
    rules = [
        {"match": {"path": "/hello", "methods": ["GET", "POST"]}, "function": "hello-world"},
        {"match": {"path": "/users/{id}", "pathType": "Template"}, "function": "users"},
        {
            "match": {"path": "/split", "pathType": "Exact"},
            "backends": [{"function": "a", "weight": 90}, {"function": "b"}],
        },
    ]
    manifest = route(hosts=["hello.example.com", "*.example.org"], rules=rules)
    result = apply(cluster, namespace, manifest)
    assert result.returncode == 0, result.stderr
    spec = get(cluster, namespace, "edgeroute", "hello")["spec"]
    assert spec["hosts"] == ["hello.example.com", "*.example.org"]
    assert spec["rules"][0]["match"] == {
        "path": "/hello",
        "pathType": "Prefix",
        "methods": ["GET", "POST"],
    }
    assert spec["rules"][1]["match"]["pathType"] == "Template"
    backends = [{"function": "a", "weight": 90}, {"function": "b", "weight": 1}]
    assert spec["rules"][2]["backends"] == backends


def _two_sources() -> Manifest:
    return function(source={"inline": WASM_HEADER, "path": "x.wasm"})


def _unknown_field() -> Manifest:
    manifest = function()
    manifest["spec"]["replicas"] = 3
    return manifest


def _no_source() -> Manifest:
    manifest = function()
    del manifest["spec"]["source"]
    return manifest


def _duplicate_env() -> Manifest:
    return function(env=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}])


def url_source(url: str = "https://x.io/m.wasm", sha256: str | None = SHA) -> Manifest:
    return function(source={"url": {"url": url, "sha256": sha256}})


def case(manifest: Manifest, *fragments: str, id: str) -> Any:
    """A refused manifest and the fragments its error must contain (field, problem)."""
    return pytest.param(manifest, list(fragments), id=id)


ONE_SOURCE = "exactly one of inline, configMapRef, url, oci, path"
ONE_TARGET = "exactly one of function or backends"
INVALID = [
    case(_two_sources(), "spec.source", ONE_SOURCE, id="two-sources"),
    case(function(source={}), "spec.source", ONE_SOURCE, id="empty-source"),
    case(_no_source(), "spec.source", "Required value", id="no-source"),
    case(function(abi="wasi"), "spec.abi", "Unsupported value", '"wasi"', id="bad-abi"),
    case(
        function(limits={"fuel": -1}),
        "spec.limits.fuel",
        "greater than or equal to 0",
        id="negative-fuel",
    ),
    case(url_source(sha256="ABC"), "spec.source.url.sha256", id="bad-sha256"),
    case(url_source(sha256=None), "spec.source.url.sha256", "Required", id="no-sha256"),
    case(url_source(url="ftp://x.io/m.wasm"), "spec.source.url.url", id="bad-url-scheme"),
    case(function(source={"oci": {"ref": "a b"}}), "spec.source.oci.ref", id="bad-oci-ref"),
    case(function(source={"inline": "not base64!"}), "spec.source.inline", id="bad-inline"),
    case(function(limits={"timeout": "1 second"}), "spec.limits.timeout", id="bad-timeout"),
    case(function(pool={"idleTimeout": "5"}), "spec.pool.idleTimeout", id="bad-idle-timeout"),
    case(function(limits={"memory": "64MB"}), "spec.limits.memory", id="bad-memory"),
    case(
        function(limits={"maxResponseBytes": "-1Mi"}),
        "spec.limits.maxResponseBytes",
        id="negative-max-response",
    ),
    case(function(pool={"maxInstances": 0}), "spec.pool.maxInstances", id="max-instances-0"),
    case(function(pool={"maxInstances": 1025}), "spec.pool.maxInstances", id="max-instances-big"),
    case(function(env=[{"name": "1-BAD"}]), "spec.env[0].name", id="bad-env-name"),
    case(_duplicate_env(), "spec.env[1]", "Duplicate value", id="duplicate-env"),
    case(_unknown_field(), 'unknown field "spec.replicas"', id="unknown-spec-field"),
    case(with_match(path="hello"), "spec.rules[0].match.path", id="path-without-slash"),
    case(with_match(pathType="Regex"), "spec.rules[0].match.pathType", id="bad-path-type"),
    case(with_match(methods=["GET", "FETCH"]), "spec.rules[0].match.methods[1]", id="bad-method"),
    case(with_rule(backends=[{"function": "b"}]), "spec.rules[0]", ONE_TARGET, id="both-targets"),
    case(with_rule(function=None), "spec.rules[0]", ONE_TARGET, id="no-target"),
    case(
        with_rule(function=None, backends=[{"function": "a", "weight": 1001}]),
        "spec.rules[0].backends[0].weight",
        id="bad-weight",
    ),
    case(
        with_rule(function=None, backends=[{"function": "a", "weight": 0}]),
        "spec.rules[0].backends",
        "weight above 0",
        id="zero-weights",
    ),
    case(with_rule(function="Hello_World"), "spec.rules[0].function", id="bad-function-name"),
    case(route(rules=[]), "spec.rules", id="no-rules"),
    case(route(hosts=["hello.example.com:8080"]), "spec.hosts[0]", id="host-with-port"),
]


# Every quantity and duration field, in each form a negative value can take:
# integers must meet the schema's minimum, strings its pattern.
NEGATIVE_VALUES = [
    ("limits.memory", -67108864, "greater than or equal to 0"),
    ("limits.memory", "-64Mi", "should match"),
    ("limits.maxRequestBytes", -1, "greater than or equal to 0"),
    ("limits.maxRequestBytes", "-1Ki", "should match"),
    ("limits.maxResponseBytes", -8388608, "greater than or equal to 0"),
    ("limits.maxResponseBytes", "-8Mi", "should match"),
    ("limits.timeout", -1, "must be of type string"),
    ("limits.timeout", "-1s", "should match"),
    ("limits.fuel", -1000, "greater than or equal to 0"),
    ("pool.maxInstances", -8, "greater than or equal to 1"),
    ("pool.idleTimeout", -300, "must be of type string"),
    ("pool.idleTimeout", "-5m", "should match"),
]


@pytest.mark.parametrize("negative", NEGATIVE_VALUES,
                         ids=[f"{f}={v}" for f, v, _ in NEGATIVE_VALUES])
def test_negative_quantity_or_duration_is_refused(
    cluster: Cluster, crds: list[str], namespace: str, negative: tuple[str, Any, str]
) -> None:
    field, value, problem = negative
    manifest = function()
    group, key = field.split(".")
    manifest["spec"][group] = {key: value}
    result = apply(cluster, namespace, manifest)
    assert result.returncode != 0, f"accepted:\n{result.stdout}"
    assert f"spec.{field}" in result.stderr, result.stderr
    assert problem in result.stderr, result.stderr
    gone = cluster.kubectl("get", "-n", namespace, "ef", "hello", "--ignore-not-found", "-o",
                           "name")
    assert gone.stdout == ""


@pytest.mark.parametrize("weight", [-1, -1000])
def test_negative_backend_weight_is_refused(
    cluster: Cluster, crds: list[str], namespace: str, weight: int
) -> None:
    manifest = _drop_nones(with_rule(function=None, backends=[
        {"function": "a", "weight": weight}, {"function": "b", "weight": 1}]))
    result = apply(cluster, namespace, manifest)
    assert result.returncode != 0, f"accepted:\n{result.stdout}"
    assert "spec.rules[0].backends[0].weight" in result.stderr, result.stderr
    assert "greater than or equal to 0" in result.stderr, result.stderr


@pytest.mark.parametrize(("field", "value"), [("readyRunners", -1), ("totalRunners", -3),
                                              ("size", -10), ("observedGeneration", -1)])
def test_negative_status_counts_are_refused(
    cluster: Cluster, crds: list[str], namespace: str, field: str, value: int
) -> None:
    assert apply(cluster, namespace, function()).returncode == 0
    result = cluster.kubectl(
        "patch", "-n", namespace, "ef", "hello", "--subresource=status", "--type=merge",
        "-p", json.dumps({"status": {field: value}}), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert f"status.{field}" in result.stderr, result.stderr


def _drop_nones(value: Any) -> Any:
    """``with_rule(function=None)`` means: no function field at all."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


@pytest.mark.parametrize(("manifest", "fragments"), INVALID)
def test_invalid_manifest_is_refused_naming_the_field(
    cluster: Cluster, crds: list[str], namespace: str, manifest: Manifest, fragments: list[str]
) -> None:
    manifest = _drop_nones(copy.deepcopy(manifest))
    result = apply(cluster, namespace, manifest)
    assert result.returncode != 0, f"accepted:\n{result.stdout}"
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in:\n{result.stderr}"
    kind, name = manifest["kind"].lower(), manifest["metadata"]["name"]
    gone = cluster.kubectl("get", "-n", namespace, kind, name, "--ignore-not-found", "-o", "name")
    assert gone.stdout == ""


def test_short_names_category_and_columns(
    cluster: Cluster, crds: list[str], namespace: str
) -> None:
    assert apply(cluster, namespace, function()).returncode == 0
    assert apply(cluster, namespace, route()).returncode == 0
    names = cluster.kubectl("get", "-n", namespace, "ef,er", "-o", "name").stdout.split()
    assert names == ["edgefunction.edgerunner.dev/hello", "edgeroute.edgerunner.dev/hello"]
    category = cluster.kubectl("get", "-n", namespace, "edgerunner", "-o", "name").stdout.split()
    assert sorted(category) == sorted(names)

    status = {
        "status": {
            "observedGeneration": 1,
            "digest": f"sha256:{SHA}",
            "shortDigest": "aaaaaaaaaaaa",
            "runners": "2/3",
            "readyRunners": 2,
            "totalRunners": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Propagated",
                    "message": "",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    cluster.kubectl(
        "patch", "-n", namespace, "ef", "hello", "--subresource=status", "--type=merge",
        "-p", json.dumps(status),
    )  # fmt: skip
    header, row = cluster.kubectl("get", "-n", namespace, "ef").stdout.splitlines()
    assert header.split() == ["NAME", "READY", "DIGEST", "RUNNERS", "AGE"]
    assert row.split()[:4] == ["hello", "True", "aaaaaaaaaaaa", "2/3"]
    header, row = cluster.kubectl("get", "-n", namespace, "er").stdout.splitlines()
    assert header.split() == ["NAME", "HOSTS", "READY", "AGE"]


def test_status_conditions_are_validated(cluster: Cluster, crds: list[str], namespace: str) -> None:
    assert apply(cluster, namespace, function()).returncode == 0
    bad = {"status": {"conditions": [{"type": "Ready", "status": "Maybe"}]}}
    result = cluster.kubectl(
        "patch", "-n", namespace, "ef", "hello", "--subresource=status", "--type=merge",
        "-p", json.dumps(bad), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "status.conditions[0].status" in result.stderr
