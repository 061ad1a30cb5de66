"""What a cluster-mode runner applies (runner/edge_runner/sources/cluster.py): changes to
what it serves, not every watch event.

The runner watches EdgeFunctions and EdgeRoutes for their ``status.handoff``.  Their
other events (kopf's annotations, the operator's rollout counts, anyone's labels)
change nothing it serves and must not cost an apply of its whole configuration,
which with 1,000 functions takes a sizeable fraction of a second.  Applies are
counted by the runner's ``edge_config_reloads_total``; a function applied after
the noise marks the point the runner has read every event before it (each kind's
events arrive in order on its watch).
"""

from __future__ import annotations

import pytest

from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

#: Annotations written to the function and to the route, one kubectl call each.
TOUCHES = 12
#: Applies the marker function and route may take: one with both confirmations,
#: or one for each.
MARKER_APPLIES = 2


def reloads(runner: RunnerProcess) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in runner.metrics().splitlines()
               if line.startswith("edge_config_reloads_total{"))


def publish(cluster: Cluster, namespace: str, name: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
        name, wat_to_wasm(constant_wat(name.encode()))) + "---\n"
        + route_yaml(name, f"/{name}", name))


def test_owner_events_that_keep_the_handoff_are_not_applied(
        cluster: Cluster, namespace: str, identities: ChartIdentities) -> None:
    with OperatorProcess(namespace, identities.operator_env()), \
            RunnerProcess(None, extra_args=["--namespace", namespace],
                          env=identities.runner_env()) as runner:
        publish(cluster, namespace, "one")
        wait_until(lambda: runner.client.get("/one").text == "one", timeout=30, what="served")
        # Settled: the rollout count is written (its events are owner events too).
        wait_until(lambda: condition(get(cluster, namespace, "ef", "one"),
                                     "Propagated").get("status") == "True", timeout=30)
        before = reloads(runner)
        for i in range(TOUCHES):
            for kind in ("ef", "er"):
                cluster.kubectl("annotate", kind, "one", "-n", namespace,
                                f"example.com/touch={i}", "--overwrite")
        publish(cluster, namespace, "two")
        wait_until(lambda: runner.client.get("/two").text == "two", timeout=30,
                   what="the marker served")
        applied = reloads(runner) - before
        assert 1 <= applied <= MARKER_APPLIES, applied
        assert runner.client.get("/one").text == "one"
