"""End to end on a real API server: kubectl apply -> operator -> ConfigMaps -> runner -> HTTP.

The operator and the runner run as the chart's ServiceAccounts (``identities``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.guests import constant_wat, counter_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.keepalive import KeepAlive
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import REPO_ROOT, RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

HELLO = REPO_ROOT / "functions" / "hello-world"


@pytest.fixture
def plane(namespace: str, identities: ChartIdentities, hello_wasm: Path
          ) -> Iterator[tuple[OperatorProcess, RunnerProcess]]:
    with OperatorProcess(namespace, identities.operator_env()) as operator, \
            RunnerProcess(None, extra_args=["--namespace", namespace],
                          env=identities.runner_env()) as runner:
        yield operator, runner


def test_hello_world_through_the_cluster(cluster: Cluster, namespace: str,
                                         plane: tuple[OperatorProcess, RunnerProcess]) -> None:
    operator, runner = plane
    cluster.kubectl("apply", "-n", namespace, "-k", str(HELLO))
    wait_until(lambda: runner.client.get("/hello", params={"name": "Ada"}).status_code == 200,
               timeout=30, what="hello-world served")
    assert runner.client.get("/hello", params={"name": "Ada"}).text == "Hello, Ada!"
    function = get(cluster, namespace, "ef", "hello-world")
    assert condition(function, "Ready")["status"] == "True"
    assert condition(function, "ModuleValid")["status"] == "True"
    assert function["status"]["observedGeneration"] == function["metadata"]["generation"]
    digest = function["status"]["digest"]
    assert runner.functions()["hello-world"]["digest"] == digest
    columns = cluster.kubectl("get", "ef", "-n", namespace).stdout
    assert "READY" in columns and digest[7:19] in columns

    # Update: a new env value is a new spec; the same keep-alive connection gets it.
    with KeepAlive(runner.port) as connection:
        assert connection.text("/hello?name=Ada") == "Hello, Ada!"
        started = time.monotonic()
        cluster.kubectl("patch", "ef", "hello-world", "-n", namespace, "--type=merge", "-p",
                        '{"spec": {"env": [{"name": "GREETING", "value": "Hi"}]}}')
        wait_until(lambda: connection.text("/hello?name=Ada") == "Hi, Ada!",
                   timeout=30, what="updated function served")
    print(f"apply->served: {time.monotonic() - started:.2f}s")

    # Delete: the function goes away and its route answers 404 once the route is gone too.
    cluster.kubectl("delete", "-n", namespace, "-k", str(HELLO))
    wait_until(lambda: runner.client.get("/hello").status_code == 404, timeout=30,
               what="404 after delete")
    assert "hello-world" not in runner.functions()
    assert operator.process is not None and operator.process.poll() is None


def test_new_module_digest_is_served_without_restart(
        cluster: Cluster, namespace: str, plane: tuple[OperatorProcess, RunnerProcess]) -> None:
    """One keep-alive connection sees both versions (a restarted runner would have closed
    it), and a function that did not change keeps its warm instance."""
    _operator, runner = plane
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input="---\n".join([
        function_yaml("swap", wat_to_wasm(constant_wat(b"one"))),
        route_yaml("swap", "/swap", "swap"),
        function_yaml("steady", wat_to_wasm(counter_wat()), extra="  pool: {reuse: true}\n"),
        route_yaml("steady", "/steady", "steady")]))
    with KeepAlive(runner.port) as connection:
        wait_until(lambda: connection.text("/swap") == "one", timeout=30, what="v1")
        wait_until(lambda: connection.get("/steady")[0] == 200, timeout=30, what="steady")
        assert connection.get("/steady")[1] == (2).to_bytes(4, "little")
        started = time.monotonic()
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=function_yaml("swap", wat_to_wasm(constant_wat(b"two"))))
        wait_until(lambda: connection.text("/swap") == "two", timeout=30, what="v2")
        elapsed = time.monotonic() - started
        assert connection.get("/steady")[1] == (3).to_bytes(4, "little")
    print(f"apply->served (new digest): {elapsed:.2f}s")
    status = get(cluster, namespace, "ef", "swap")["status"]
    assert runner.functions()["swap"]["digest"] == status["digest"]


def test_invalid_module_is_reported_not_crashed(
        cluster: Cluster, namespace: str, plane: tuple[OperatorProcess, RunnerProcess]) -> None:
    operator, _runner = plane
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=function_yaml("broken", b"\x00asm\x01\x00\x00\x00garbage"))
    importer = wat_to_wasm('(module (import "env" "steal" (func)) (memory (export "memory") 1))')
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml("importer", importer))
    laptop = "apiVersion: edgerunner.dev/v1alpha1\nkind: EdgeFunction\n" \
        "metadata: {name: laptop}\nspec: {source: {path: hello.wasm}}\n"
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=laptop)
    for name, reason in [("broken", "CompileError"), ("importer", "ImportNotAllowed"),
                         ("laptop", "PathNotSupported")]:
        def module_valid(n: str = name) -> dict[str, Any] | None:
            return condition(get(cluster, namespace, "ef", n), "ModuleValid") or None

        found = wait_until(module_valid, timeout=30, what=f"{name} condition")
        assert found["status"] == "False", (name, found)
        assert found["reason"] == reason
        assert condition(get(cluster, namespace, "ef", name), "Ready")["status"] == "False"
    assert "env.steal" in condition(get(cluster, namespace, "ef", "importer"),
                                    "ModuleValid")["message"]
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "json").stdout
    assert "ImportNotAllowed" in events
    missing = cluster.kubectl("get", "configmap", "edgefn-broken", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert operator.process is not None and operator.process.poll() is None


def test_reconcile_is_idempotent_across_operator_restart(
        cluster: Cluster, namespace: str, plane: tuple[OperatorProcess, RunnerProcess],
        identities: ChartIdentities) -> None:
    operator, runner = plane
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
        "steady", wat_to_wasm(constant_wat(b"s"))) + "---\n" + route_yaml("steady", "/s",
                                                                          "steady"))
    wait_until(lambda: runner.client.get("/s").text == "s", timeout=30, what="served")
    wait_until(lambda: condition(get(cluster, namespace, "er", "steady"), "Ready"), timeout=30)
    # Settled: the rollout tracker has counted the runner (its passes are coalesced).
    wait_until(lambda: condition(get(cluster, namespace, "ef", "steady"),
                                 "Propagated").get("status") == "True", timeout=30)

    def versions() -> dict[str, str]:
        return {kind: get(cluster, namespace, kind, name)["metadata"]["resourceVersion"]
                for kind, name in [("ef", "steady"), ("er", "steady"),
                                   ("configmap", "edgefn-steady"),
                                   ("configmap", "edgeroute-steady")]}

    before = versions()
    operator.stop()
    with OperatorProcess(namespace, identities.operator_env()) as again:
        wait_until(lambda: "function_changed" in again.log() or "resum" in again.log().lower(),
                   timeout=30, what="operator resumed")
        wait_until(lambda: 'kind="function"' in again.metrics()
                   and "edge_operator_reconciles_total" in again.metrics(), timeout=30,
                   what="resume reconcile counted")
        assert versions() == before
        assert 'edge_operator_writes_total{' not in again.metrics().replace(
            "# HELP edge_operator_writes_total", "").replace("# TYPE edge_operator_writes_total",
                                                            "")


def test_invalid_objects_are_refused_by_the_api_server(
        cluster: Cluster, crds: list[str], namespace: str) -> None:
    refused = cluster.kubectl("apply", "-n", namespace, "-f", "-", check=False, input="""\
apiVersion: edgerunner.dev/v1alpha1
kind: EdgeFunction
metadata: {name: twosources}
spec: {source: {path: a.wasm, inline: AAAA}}
""")
    assert refused.returncode != 0
    assert "spec.source" in refused.stderr
