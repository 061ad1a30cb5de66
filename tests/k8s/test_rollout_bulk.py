"""A bulk apply through the real control plane: what it costs in API requests, and that
the coalesced rollout counts still converge (operator/edge_operator/propagation.py).

The operator runs as the chart's ServiceAccount; the API server's audit log
(``support.audit``) records each of its requests.  Applying many functions and
routes in one go must not cost a list of the namespace per object (the route
reconciles read the functions from a kopf index, the rollout tracker keeps the
functions as the watch reports them), and the tracker writes each function's
counts at most twice on the way to ``1/1`` (``Rolling``, then
``AllRunnersServing``; nothing before the function's first reconcile).  A
runner joining or leaving then recounts every function from that state.
"""

from __future__ import annotations

import json
from collections import Counter
from contextlib import ExitStack

import pytest

from support.audit import Audit
from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import function_yaml, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

FUNCTIONS = 30
LEASE_SECONDS = 3
#: Lists of EdgeFunctions the operator may make meanwhile: the tracker's first
#: list, a resync and a full recount that fall in the window.  Listing per object
#: would be at least FUNCTIONS.
MAX_LISTS = 4


def runners_column(cluster: Cluster, namespace: str) -> Counter[str]:
    """How many functions show each ``status.runners`` value (``-`` for none yet)."""
    out = cluster.kubectl("get", "ef", "-n", namespace, "-o", "json").stdout
    return Counter((item.get("status") or {}).get("runners", "-")
                   for item in json.loads(out)["items"])


def runner(namespace: str, identities: ChartIdentities, name: str) -> RunnerProcess:
    return RunnerProcess(None, extra_args=["--namespace", namespace, "--grace", "1"],
                         env=identities.runner_env(POD_NAME=name,
                                                   EDGE_RUNNER_LEASE_SECONDS=str(LEASE_SECONDS)))


def test_bulk_apply_lists_once_and_rollout_counts_converge(
        cluster: Cluster, namespace: str, identities: ChartIdentities) -> None:
    with ExitStack() as stack:
        operator = stack.enter_context(OperatorProcess(
            namespace, identities.operator_env(EDGE_OPERATOR_ROLLOUT_INTERVAL="1")))
        first = stack.enter_context(runner(namespace, identities, "runner-a"))
        audit = Audit(cluster, identities.account("operator"), namespace)
        manifests = [function_yaml(f"bulk{i}", wat_to_wasm(constant_wat(f"ok {i}".encode())))
                     + "---\n" + route_yaml(f"bulk{i}", f"/bulk{i}", f"bulk{i}")
                     for i in range(FUNCTIONS)]
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input="---\n".join(manifests))

        wait_until(lambda: runners_column(cluster, namespace) == {"1/1": FUNCTIONS},
                   timeout=120, interval=0.5, what="every function counted 1/1")
        assert all(first.client.get(f"/bulk{i}").text == f"ok {i}" for i in range(FUNCTIONS))
        requests = Counter((verb, resource) for verb, resource, _ in audit.requests())
        assert requests[("list", "edgefunctions")] <= MAX_LISTS, requests
        rollout = audit.status_writes("edgefunctions")["edge-operator-rollout"]
        assert FUNCTIONS <= rollout <= 2 * FUNCTIONS, (rollout, operator.log()[-3000:])

        # A runner joins: every function is recounted, and again when it leaves.
        with runner(namespace, identities, "runner-b"):
            wait_until(lambda: runners_column(cluster, namespace) == {"2/2": FUNCTIONS},
                       timeout=60, interval=0.5, what="every function counted 2/2")
        wait_until(lambda: runners_column(cluster, namespace) == {"1/1": FUNCTIONS},
                   timeout=60, interval=0.5, what="every function counted 1/1 again")
