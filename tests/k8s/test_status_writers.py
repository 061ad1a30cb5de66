"""Status writers, ConfigMap ownership and retries of a real operator on a real API server.

Objects applied together (one ``kubectl apply``) must all end with every
condition their writers own (docs/resources.md, "who writes status"); the
operator never overwrites or deletes a ConfigMap it does not own; a transient
source error is retried after its delay, not at the next 60 s resync.  The operator
and the runner run as the chart's ServiceAccounts (``identities``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import (
    condition,
    condition_managers,
    configmap_yaml,
    function_yaml,
    get,
    items,
    route_yaml,
)
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

ROUTES = 16
#: Routes 0-1, 2-3 and 4-5 share a path: three conflicting pairs.
CONFLICTING = 6


@pytest.fixture
def operator(namespace: str, identities: ChartIdentities) -> Iterator[OperatorProcess]:
    with OperatorProcess(namespace, identities.operator_env()) as started:
        yield started


def _route_path(index: int) -> str:
    return f"/shared{index // 2}" if index < CONFLICTING else f"/own{index}"


def _conditions(obj: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions", [])}


def test_routes_applied_together_all_become_ready(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    """Defect 1: with routes applied in one go, several ended with no Ready at all.

    The conflict sync of one route rewrote another route's whole conditions
    list from a listing taken before that route's own handler wrote Ready.
    """
    manifests = "---\n".join(route_yaml(f"route-{i:02d}", _route_path(i), "target")
                             for i in range(ROUTES))
    # The routes' function exists (a route to a missing one is Ready=False, FunctionNotFound).
    manifests += "---\n" + function_yaml("target", wat_to_wasm(constant_wat(b"t")))
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifests)

    # Ready=True, not just present: a route reconciled before the function was created
    # is Ready=False (FunctionNotFound) until the function's event reconciles it again.
    def settled() -> list[dict[str, Any]] | None:
        routes = items(cluster, namespace, "edgeroutes")
        done = len(routes) == ROUTES and all(
            _conditions(r).get("Ready") == "True" and "Conflict" in _conditions(r)
            for r in routes)
        return routes if done else None

    try:
        routes = wait_until(settled, timeout=60, interval=0.5, what="Ready and Conflict on all")
    except TimeoutError:
        missing = {r["metadata"]["name"]: _conditions(r)
                   for r in items(cluster, namespace, "edgeroutes")
                   if _conditions(r).get("Ready") != "True" or "Conflict" not in _conditions(r)}
        pytest.fail(f"routes not Ready or without Conflict: {missing}\n"
                    f"{operator.log()[-3000:]}")
    for route in routes:
        name = route["metadata"]["name"]
        index = int(name.rsplit("-", 1)[1])
        assert _conditions(route)["Ready"] == "True", route["status"]
        expected = "True" if index < CONFLICTING else "False"
        assert _conditions(route)["Conflict"] == expected, (name, route["status"])
        assert route["status"]["observedGeneration"] == route["metadata"]["generation"]
        # One writer per condition: the reconcile owns Ready, the conflict sync Conflict.
        assert condition_managers(route, "Ready") == {"edge-operator"}
        assert condition_managers(route, "Conflict") == {"edge-operator-conflicts"}
    columns = cluster.kubectl("get", "er", "-n", namespace, "--no-headers").stdout.splitlines()
    assert len(columns) == ROUTES and all(" True " in line for line in columns), columns

    def warned() -> set[str]:
        events = json.loads(cluster.kubectl("get", "events", "-n", namespace, "-o",
                                            "json").stdout)["items"]
        return {e["involvedObject"]["name"] for e in events if e["reason"] == "RulesConflict"}

    conflicting = {f"route-{i:02d}" for i in range(CONFLICTING)}
    wait_until(lambda: warned() == conflicting, timeout=10, interval=0.5,
               what="a RulesConflict event on each conflicting route")

    # Deleting one of a conflicting pair clears its partner's conflict.
    cluster.kubectl("delete", "er", "route-00", "-n", namespace)
    wait_until(lambda: condition(get(cluster, namespace, "er", "route-01"),
                                 "Conflict").get("status") == "False",
               timeout=30, interval=0.5, what="conflict cleared")
    assert condition(get(cluster, namespace, "er", "route-01"), "Ready")["status"] == "True"


def test_functions_applied_together_keep_every_condition(
        cluster: Cluster, namespace: str, operator: OperatorProcess,
        identities: ChartIdentities) -> None:
    """The reconcile (Ready, ModuleValid) and the rollout tracker (Propagated, counts)
    write the same status at once; neither drops the other's conditions."""
    count = 12
    manifests = "---\n".join(
        function_yaml(f"fn-{i:02d}", wat_to_wasm(constant_wat(f"body {i}".encode())))
        for i in range(count))
    env = identities.runner_env(POD_NAME="runner-solo", EDGE_RUNNER_LEASE_SECONDS="3")
    with RunnerProcess(None, extra_args=["--namespace", namespace], env=env):
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifests)

        def settled() -> list[dict[str, Any]] | None:
            functions = items(cluster, namespace, "edgefunctions")
            done = len(functions) == count and all(
                _conditions(f) == {"Ready": "True", "ModuleValid": "True", "Propagated": "True"}
                and (f.get("status") or {}).get("runners") == "1/1" for f in functions)
            return functions if done else None

        try:
            functions = wait_until(settled, timeout=90, interval=0.5, what="all propagated")
        except TimeoutError:
            states = {f["metadata"]["name"]: (_conditions(f), f.get("status", {}).get("runners"))
                      for f in items(cluster, namespace, "edgefunctions")}
            pytest.fail(f"not settled: {states}\n{operator.log()[-3000:]}")
    for function in functions:
        status = function["status"]
        assert status["observedGeneration"] == function["metadata"]["generation"]
        assert status["artifact"] == f"configmap/edgefn-{function['metadata']['name']}"
        assert condition_managers(function, "Ready") == {"edge-operator"}
        assert condition_managers(function, "ModuleValid") == {"edge-operator"}
        assert condition_managers(function, "Propagated") == {"edge-operator-rollout"}


def test_a_configmap_the_operator_does_not_own_is_left_alone(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    squatter = {"note": "not the operator's"}
    for name in ("edgefn-squat", "edgeroute-squat"):
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=configmap_yaml(name, squatter,
                                             labels={"edgerunner.dev/kind": "other"}))
    before = {name: get(cluster, namespace, "configmap", name)["metadata"]["resourceVersion"]
              for name in ("edgefn-squat", "edgeroute-squat")}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
        "squat", wat_to_wasm(constant_wat(b"s"))) + "---\n" + route_yaml("squat", "/s", "squat"))
    for kind in ("ef", "er"):
        def ready_condition(k: str = kind) -> dict[str, Any] | None:
            return condition(get(cluster, namespace, k, "squat"), "Ready") or None

        ready = wait_until(ready_condition, timeout=30, interval=0.5, what=f"{kind} Ready")
        assert (ready["status"], ready["reason"]) == ("False", "ConfigMapNotOwned"), ready
        assert "not owned" in ready["message"]
    assert condition(get(cluster, namespace, "ef", "squat"), "ModuleValid")["status"] == "True"
    for name, version in before.items():
        configmap = get(cluster, namespace, "configmap", name)
        assert configmap["metadata"]["resourceVersion"] == version
        assert configmap["data"] == squatter
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "ConfigMapNotOwned" in events

    # Deleting the EdgeFunction leaves the squatter's ConfigMap alone too.
    cluster.kubectl("delete", "ef", "squat", "-n", namespace)
    wait_until(lambda: "edgefn-squat is not owned by" in operator.log(), timeout=30,
               interval=0.5, what="the operator to skip the foreign ConfigMap")
    assert get(cluster, namespace, "configmap", "edgefn-squat")["data"] == squatter

    # Once the squatter's ConfigMap is gone, the retry publishes the route's own (its
    # function was deleted above, so the route now says that instead).
    cluster.kubectl("delete", "configmap", "edgeroute-squat", "-n", namespace)
    wait_until(lambda: condition(get(cluster, namespace, "er", "squat"),
                                 "Ready").get("reason") == "FunctionNotFound",
               timeout=70, interval=0.5, what="route published after the retry")
    published = get(cluster, namespace, "configmap", "edgeroute-squat")
    route_uid = get(cluster, namespace, "er", "squat")["metadata"]["uid"]
    assert [ref["uid"] for ref in published["metadata"]["ownerReferences"]] == [route_uid]


def test_transient_source_error_is_retried_after_its_delay(
        cluster: Cluster, namespace: str, operator: OperatorProcess, tmp_path: Path) -> None:
    """A missing configMapRef is retried within seconds, not at the 60 s resync."""
    manifest = json.dumps({
        "apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
        "metadata": {"name": "later"},
        "spec": {"source": {"configMapRef": {"name": "later-module"}}},
    })
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)
    failed = wait_until(lambda: condition(get(cluster, namespace, "ef", "later"), "Ready") or None,
                        timeout=30, interval=0.5, what="ConfigMapNotFound")
    assert failed["reason"] == "ConfigMapNotFound"
    assert condition(get(cluster, namespace, "ef", "later"), "ModuleValid")["status"] == "Unknown"
    module = tmp_path / "module.wasm"
    module.write_bytes(wat_to_wasm(constant_wat(b"late")))
    cluster.kubectl("create", "configmap", "later-module", "-n", namespace,
                    f"--from-file=module.wasm={module}")
    # The first retries come 5 s and 10 s after the failure; the resync would take 60 s.
    wait_until(lambda: condition(get(cluster, namespace, "ef", "later"),
                                 "Ready").get("status") == "True",
               timeout=25, interval=0.5, what="Ready after a retry")
