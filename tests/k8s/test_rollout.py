"""Runner registration, heartbeats and rollout tracking with three real runners (R7).

The operator and the runners run as the chart's ServiceAccounts (``identities``).
Bounds come from docs/resources.md: a runner counts as live until its Lease's
``renewTime`` + ``leaseDurationSeconds``, the operator recounts at least every
``--rollout-interval``, and a runner deletes its Lease on graceful shutdown.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

LEASE_SECONDS = 3
#: The operator's --rollout-interval: recounts when no Lease changes (an expiry).
ROLLOUT_INTERVAL = 1.0
#: Slack for a recount's API round trips and the test's own polling.
MARGIN = 1.5


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
def fleet(namespace: str, identities: ChartIdentities
          ) -> Iterator[tuple[OperatorProcess, list[RunnerProcess]]]:
    with ExitStack() as stack:
        operator = stack.enter_context(OperatorProcess(namespace, identities.operator_env(
            EDGE_OPERATOR_ROLLOUT_INTERVAL=str(ROLLOUT_INTERVAL))))
        runners = []
        for letter in "abc":
            env = identities.runner_env(POD_NAME=f"runner-{letter}",
                                        EDGE_RUNNER_LEASE_SECONDS=str(LEASE_SECONDS))
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

    # Graceful stop: the runner removes its own Lease before it exits (the operator's
    # clean-up of expired Leases would take 3 lease durations), and the count drops.
    assert runners[0].terminate() == 0
    assert "runner-a" not in leases(cluster, namespace)
    assert "deregistered runner-a" in runners[0].log()
    wait_until(lambda: rollout(cluster, namespace, "roll")[:3] == (2, 2, "True"),
               timeout=ROLLOUT_INTERVAL + MARGIN, what="count without runner-a")

    # SIGKILL: no goodbye.  Live until its last renewal (at most a third of the lease
    # before the kill) + the lease; excluded at the next recount, within the interval.
    killed_at = time.monotonic()
    assert runners[1].process is not None
    runners[1].process.send_signal(signal.SIGKILL)
    wait_until(lambda: rollout(cluster, namespace, "roll")[:2] == (1, 1),
               timeout=LEASE_SECONDS + ROLLOUT_INTERVAL + MARGIN, what="killed runner excluded")
    excluded = time.monotonic() - killed_at
    print(f"SIGKILL -> excluded: {excluded:.2f}s")
    assert excluded >= LEASE_SECONDS * 2 / 3 - 0.1, "counted dead before its lease expired"
    # Deleted once expired for 3 lease durations (plus the recount that notices it).
    wait_until(lambda: "runner-b" not in leases(cluster, namespace),
               timeout=3 * LEASE_SECONDS + ROLLOUT_INTERVAL + MARGIN,
               what="expired lease cleaned up")
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
