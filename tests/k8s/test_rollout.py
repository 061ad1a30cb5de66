"""Runner registration, heartbeats and rollout tracking with three real runners (R7)."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from support.guests import constant_wat
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

LEASE_SECONDS = 3


def leases(cluster: Cluster, namespace: str) -> dict[str, dict[str, Any]]:
    out = cluster.kubectl("get", "leases", "-n", namespace, "-l", "edgerunner.dev/kind=runner",
                          "-o", "json")
    return {item["spec"]["holderIdentity"]: item for item in json.loads(out.stdout)["items"]}


def rollout(cluster: Cluster, namespace: str, name: str) -> tuple[int, int, str, str]:
    obj = get(cluster, namespace, "ef", name)
    status = obj.get("status") or {}
    propagated = condition(obj, "Propagated")
    return (status.get("readyRunners", -1), status.get("totalRunners", -1),
            propagated.get("status", ""), status.get("digest", ""))


@pytest.fixture
def fleet(cluster: Cluster, crds: list[str], namespace: str
          ) -> Iterator[tuple[OperatorProcess, list[RunnerProcess]]]:
    with ExitStack() as stack:
        operator = stack.enter_context(OperatorProcess(namespace, cluster.env()))
        runners = []
        for letter in "abc":
            env = {**cluster.env(), "POD_NAME": f"runner-{letter}",
                   "EDGE_RUNNER_LEASE_SECONDS": str(LEASE_SECONDS)}
            runners.append(stack.enter_context(
                RunnerProcess(None, extra_args=["--namespace", namespace, "--grace", "2"],
                              env=env)))
        yield operator, runners


def test_registration_propagation_and_faults(
        cluster: Cluster, namespace: str, fleet: tuple[OperatorProcess, list[RunnerProcess]]
) -> None:
    operator, runners = fleet
    wait_until(lambda: len(leases(cluster, namespace)) == 3, timeout=20, what="3 leases")
    assert set(leases(cluster, namespace)) == {"runner-a", "runner-b", "runner-c"}

    # Publish: all three runners serve it, status says 3/3 and Propagated.
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
        "roll", wat_to_wasm(constant_wat(b"v1"))) + "---\n" + route_yaml("roll", "/roll", "roll"))
    wait_until(lambda: rollout(cluster, namespace, "roll")[:3] == (3, 3, "True"), timeout=30,
               what="3/3 propagated")
    for runner in runners:
        assert runner.client.get("/roll").text == "v1"
    assert "3/3" in cluster.kubectl("get", "ef", "roll", "-n", namespace).stdout

    # Roll out a new digest: Propagated follows, and every runner serves it.
    started = time.monotonic()
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=function_yaml("roll", wat_to_wasm(constant_wat(b"v2"))))

    def rolled() -> bool:
        ready, total, propagated, digest = rollout(cluster, namespace, "roll")
        return (ready, total, propagated) == (3, 3, "True") and all(
            r.functions()["roll"]["digest"] == digest for r in runners)

    wait_until(rolled, timeout=30, what="v2 propagated")
    print(f"apply->propagated to 3 runners: {time.monotonic() - started:.2f}s")
    assert all(r.client.get("/roll").text == "v2" for r in runners)

    # Graceful stop: the lease is removed and the count drops.
    runners[0].terminate()
    wait_until(lambda: "runner-a" not in leases(cluster, namespace), timeout=10,
               what="lease removed on SIGTERM")
    wait_until(lambda: rollout(cluster, namespace, "roll")[:3] == (2, 2, "True"), timeout=15)

    # SIGKILL: no goodbye; excluded within three lease periods and cleaned up.
    killed_at = time.monotonic()
    assert runners[1].process is not None
    runners[1].process.send_signal(signal.SIGKILL)
    wait_until(lambda: rollout(cluster, namespace, "roll")[:2] == (1, 1),
               timeout=3 * LEASE_SECONDS + 2, what="killed runner excluded")
    print(f"SIGKILL -> excluded: {time.monotonic() - killed_at:.2f}s")
    wait_until(lambda: "runner-b" not in leases(cluster, namespace),
               timeout=3 * LEASE_SECONDS + 5, what="expired lease cleaned up")
    assert operator.process is not None and operator.process.poll() is None


def test_runner_survives_api_server_restart(
        cluster: Cluster, namespace: str, fleet: tuple[OperatorProcess, list[RunnerProcess]]
) -> None:
    _operator, runners = fleet
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
        "sturdy", wat_to_wasm(constant_wat(b"one"))) + "---\n"
        + route_yaml("sturdy", "/sturdy", "sturdy"))
    wait_until(lambda: all(r.client.get("/sturdy").text == "one" for r in runners), timeout=30)
    cluster.stop_apiserver()
    try:
        for _ in range(20):  # the last good configuration keeps serving
            assert all(r.client.get("/sturdy").text == "one" for r in runners)
            assert all(r.admin.get("/readyz").status_code == 200 for r in runners)
    finally:
        cluster.start_apiserver()
    cluster.kubectl("apply", "-n", namespace, "-f", "-",
                    input=function_yaml("sturdy", wat_to_wasm(constant_wat(b"two"))))
    wait_until(lambda: all(r.client.get("/sturdy").text == "two" for r in runners), timeout=60,
               what="runners reconnected and got the update")
    wait_until(lambda: rollout(cluster, namespace, "sturdy")[:3] == (3, 3, "True"), timeout=30)
