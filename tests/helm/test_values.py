"""values.yaml and values.schema.json: unknown keys and bad values are refused,
every key is documented, and the two files describe the same keys."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from edge_api.settings import unknown_variables
from edge_runner.cli import parse
from edge_runner.settings import RunnerSettings
from support.helm import CHART_DIR, Helm, container

SCHEMA: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text())
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)

# Values copied into manifests as Kubernetes objects: their inner keys follow
# the Kubernetes API's schema, not this chart's, so they are open objects.
PASS_THROUGH = {
    "runner.extraEnv", "runner.settings", "runner.resources", "runner.autoscaling.behavior",
    "runner.networkPolicy.httpFrom", "runner.networkPolicy.adminFrom",
    "runner.networkPolicy.egress", "runner.podSecurityContext", "runner.securityContext",
    "runner.tolerations", "runner.affinity", "runner.topologySpreadConstraints",
    "operator.extraEnv", "operator.settings", "operator.resources",
    "operator.networkPolicy.metricsFrom", "operator.networkPolicy.egress",
    "operator.podSecurityContext", "operator.securityContext", "operator.tolerations",
    "operator.affinity", "httpRoute.parentRefs",
}  # fmt: skip


def object_nodes(
    node: dict[str, Any] = SCHEMA, dotted: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, schema) of every object in the schema, and of every pass-through value.

    Items of a list of objects have the path of the list plus ``[]``.
    """
    if dotted in PASS_THROUGH:
        yield dotted, node
        return  # may still constrain a few inner keys (runner.resources.limits.memory)
    if node.get("type") == "object" or "properties" in node:
        yield dotted, node
    for key, child in node.get("properties", {}).items():
        yield from object_nodes(child, f"{dotted}.{key}".lstrip("."))
    items = node.get("items")
    if isinstance(items, dict):
        yield from object_nodes(items, f"{dotted}[]")


def chart_objects() -> list[tuple[str, dict[str, Any]]]:
    """Objects whose keys this chart defines (they list their properties)."""
    return [(p, n) for p, n in object_nodes() if "properties" in n and p not in PASS_THROUGH]


def values_at(dotted: str) -> Any:
    current: Any = VALUES
    for step in filter(None, dotted.split(".")):
        current = current[step]
    return current


# --- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        # The example: the key is runner.replicas.
        ("runner.replicaCount=2", "additional properties 'replicaCount' not allowed"),
        ("replicas=2", "additional properties 'replicas' not allowed"),
        ("ingress.host=hello.example.com", "additional properties 'host' not allowed"),
        ("operator.watchNamespace=team-a", "additional properties 'watchNamespace' not allowed"),
        ("monitoring.serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
        ("runner.image.tags=v1", "additional properties 'tags' not allowed"),
        ("runner.autoscaling.minReplica=1", "additional properties 'minReplica' not allowed"),
        ("rbac.enabled=false", "additional properties 'enabled' not allowed"),
    ],
)
def test_unknown_keys_are_refused(helm: Helm, assignment: str, message: str) -> None:
    for result in (
        helm.template(sets=[assignment], check=False),
        helm.lint(sets=[assignment], check=False),
    ):
        assert result.returncode != 0, assignment
        output = result.stdout + result.stderr
        assert "values don't meet the specifications of the schema" in output, output
        assert message in output, output


@pytest.mark.parametrize(
    ("assignment", "where"),
    [
        ("runner.replicas=two", "/runner/replicas"),
        ("runner.replicas=-1", "/runner/replicas"),
        ("runner.logLevel=verbose", "/runner/logLevel"),
        ("runner.service.type=Internal", "/runner/service/type"),
        ("runner.ports.http=70000", "/runner/ports/http"),
        ("runner.image.pullPolicy=Sometimes", "/runner/image/pullPolicy"),
        ("runner.image.digest=latest", "/runner/image/digest"),
        ("runner.moduleCache.sizeLimit=lots", "/runner/moduleCache/sizeLimit"),
        ("runner.resources.limits=null", "/runner/resources"),
        ("operator.watchNamespaces={Team_A}", "/operator/watchNamespaces/0"),
        ("ingress.hosts={https://hello.example.com}", "/ingress/hosts/0"),
        ("monitoring.serviceMonitor.interval=often", "/monitoring/serviceMonitor/interval"),
        ("runner.podAnnotations.a.b=c", "/runner/podAnnotations/a"),
        ("registryCA.configMap=Corp_CA", "/registryCA/configMap"),
        ("registryCA.key=ca/crt", "/registryCA/key"),
    ],
)
def test_bad_values_are_refused(helm: Helm, assignment: str, where: str) -> None:
    result = helm.template(sets=[assignment], check=False)
    assert result.returncode != 0, assignment
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert f"at '{where}'" in result.stderr, result.stderr


def test_the_defaults_and_nulls_for_nullable_keys_are_accepted(helm: Helm) -> None:
    helm.template()
    helm.template(sets=["runner.maxConcurrency=null", "runner.maxWait=null"])
    helm.template(sets=["runner.maxConcurrency=4", "runner.maxWait=0.25"])


# --- the schema itself ------------------------------------------------------------------


def test_every_chart_object_refuses_unknown_keys() -> None:
    open_objects = set()
    for dotted, node in object_nodes():
        if dotted in PASS_THROUGH:
            open_objects.add(dotted)
        elif "properties" in node:
            assert node.get("additionalProperties") is False, f"{dotted or '<root>'}"
        else:
            # Only labels, annotations and nodeSelector: maps of strings.
            assert node.get("additionalProperties") == {"type": "string"}, dotted
    assert open_objects == PASS_THROUGH


def test_schema_and_values_yaml_list_the_same_keys() -> None:
    for dotted, node in chart_objects():
        if dotted.endswith("[]"):
            continue  # items of lists that are empty by default
        defaults = values_at(dotted)
        assert isinstance(defaults, dict), dotted
        assert set(defaults) == set(node["properties"]), dotted or "<root>"


def test_pass_through_defaults_are_kubernetes_shaped() -> None:
    for dotted in PASS_THROUGH:
        node: dict[str, Any] = SCHEMA
        for step in dotted.split("."):
            node = node["properties"][step]
        assert isinstance(values_at(dotted), list if node["type"] == "array" else dict), dotted


# --- documentation ------------------------------------------------------------------------


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_.-]*):(?:\s|$)")


def test_every_chart_key_in_values_yaml_has_a_comment_above_it() -> None:
    documented_parents = {dotted for dotted, _ in chart_objects()}
    stack: list[tuple[int, str]] = []
    previous = ""
    undocumented = []
    for line in VALUES_TEXT.splitlines():
        match = KEY_LINE.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = ".".join(key for _, key in stack)
            dotted = f"{parent}.{match['key']}".lstrip(".")
            if parent in documented_parents and not previous.lstrip().startswith("#"):
                undocumented.append(dotted)
            stack.append((indent, match["key"]))
        if line.strip():
            previous = line
    assert not undocumented, f"keys without a comment above them: {undocumented}"
    assert len(documented_parents) > 20  # the walk found the chart's objects


def test_every_schema_property_has_a_description() -> None:
    missing = [
        f"{dotted}.{key}".lstrip(".")
        for dotted, node in chart_objects()
        for key, child in node["properties"].items()
        if not child.get("description")
    ]
    assert not missing


def test_runner_settings_become_variables_the_runner_knows(
    helm: Helm, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = helm.render(sets=["runner.settings.maxQueued=512", "runner.settings.inlineFuel=0",
                                 "runner.settings.maxQueud=5"])
    deployment = next(d for d in rendered.all("Deployment") if d["metadata"]["name"].endswith(
        "-runner"))
    env = {e["name"]: e.get("value") for e in container(deployment, "runner")["env"]}
    assert (env["EDGE_RUNNER_MAX_QUEUED"], env["EDGE_RUNNER_INLINE_FUEL"]) == ("512", "0")
    for name in list(os.environ):
        if name.startswith("EDGE_RUNNER_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if value is not None:
            monkeypatch.setenv(name, value)
    # The typo renders (the chart cannot know every setting) and the runner refuses it.
    assert unknown_variables(RunnerSettings) == ["EDGE_RUNNER_MAX_QUEUD"]
    monkeypatch.delenv("EDGE_RUNNER_MAX_QUEUD")
    parsed = parse([])
    assert isinstance(parsed, RunnerSettings)
    assert (parsed.max_queued, parsed.inline_fuel) == (512, 0)
