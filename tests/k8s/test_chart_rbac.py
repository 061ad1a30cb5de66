"""The chart's RBAC as the processes meet it (support.identities).

Every Kubernetes test runs its runners and operators as the chart's ServiceAccounts and
fails if the API server refused one of their requests.  Here: the control that such a
refusal is seen (a Role with one verb less), and what the operator needs beyond the
chart today (support.identities.KNOWN_GAPS).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.guests import constant_wat
from support.helm import Helm
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s


@pytest.fixture
def exact(cluster: Cluster, crds: list[str], namespace: str, helm: Helm, tmp_path: Path
          ) -> Iterator[ChartIdentities]:
    """The chart's identities with nothing added."""
    chart = ChartIdentities(cluster, helm, namespace, tmp_path / "ids", known_gaps=False)
    try:
        yield chart.install()
    finally:
        chart.remove()


def test_a_permission_the_chart_lacks_is_reported(
        cluster: Cluster, namespace: str, exact: ChartIdentities) -> None:
    """The runner's Role without ``delete`` on Leases: the runner still stops cleanly
    (it only logs), but the refusal is found in the audit log."""
    if cluster.audit_log is None:
        pytest.skip("an existing cluster has no audit log of the harness")
    [role] = [o for o in exact.objects if o["kind"] == "Role"
              and o["metadata"]["labels"]["app.kubernetes.io/component"] == "runner"]
    rules = [{**rule, "verbs": [v for v in rule["verbs"] if v != "delete"]}
             for rule in role["rules"]]
    cluster.kubectl("patch", "role", role["metadata"]["name"], "-n", namespace, "--type=merge",
                    "-p", json.dumps({"rules": rules}))
    env = exact.runner_env(POD_NAME="runner-x")
    with RunnerProcess(None, extra_args=["--namespace", namespace], env=env) as runner:
        wait_until(lambda: get(cluster, namespace, "lease", "edge-runner-runner-x"),
                   timeout=20, what="lease")
    assert runner.process is not None and runner.process.returncode == 0
    assert "could not remove lease on shutdown" in runner.log()
    assert [str(r) for r in exact.forbidden()] == [
        f"edge-edge-runner-runner: delete leases.coordination.k8s.io edge-runner-runner-x"
        f" in {namespace}"]


def test_the_operator_needs_nothing_the_chart_does_not_grant(
        cluster: Cluster, namespace: str, exact: ChartIdentities) -> None:
    with OperatorProcess(namespace, exact.operator_env()):
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input=function_yaml("plain", wat_to_wasm(constant_wat(b"p"))))
        wait_until(lambda: condition(get(cluster, namespace, "ef", "plain"),
                                     "Ready").get("status") == "True",
                   timeout=30, what="Ready with the chart's RBAC only")
    assert [str(r) for r in exact.forbidden()] == []
