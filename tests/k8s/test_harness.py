"""The local control plane itself (tests/support/k8s.py): version, storage,
garbage collection, RBAC and an API server restart."""

from __future__ import annotations

import json
import subprocess

import pytest

from support.k8s import Cluster, pinned_version, wait_until

pytestmark = pytest.mark.k8s


def run(cluster: Cluster, command: str, check: bool = True) -> str:
    """kubectl with a whitespace-separated command line; its stdout."""
    return cluster.kubectl(*command.split(), check=check).stdout


def can_i(cluster: Cluster, command: str) -> subprocess.CompletedProcess[str]:
    return cluster.kubectl("auth", "can-i", *command.split(), check=False)


def test_version_is_the_pinned_release(cluster: Cluster) -> None:
    if cluster.existing:
        pytest.skip("an existing cluster runs its own version")
    server = json.loads(run(cluster, "get --raw /version"))
    assert server["gitVersion"] == pinned_version()
    major, minor = pinned_version().removeprefix("v").split(".")[:2]
    assert (server["major"], server["minor"]) == (major, minor)
    client = json.loads(run(cluster, "version --client -o json"))
    assert client["clientVersion"]["gitVersion"] == pinned_version()


def test_configmap_round_trip(cluster: Cluster, namespace: str) -> None:
    ns = f"-n {namespace}"
    run(cluster, f"{ns} create configmap greeting --from-literal=GREETING=hello")
    got = json.loads(run(cluster, f"{ns} get configmap greeting -o json"))
    assert got["data"] == {"GREETING": "hello"}
    assert got["metadata"]["namespace"] == namespace


def test_garbage_collector_deletes_dependents(cluster: Cluster, namespace: str) -> None:
    ns = f"-n {namespace}"
    run(cluster, f"{ns} create configmap owner")
    uid = run(cluster, f"{ns} get configmap owner -o jsonpath={{.metadata.uid}}")
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}
    owned = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "owned", "namespace": namespace, "ownerReferences": [owner]},
        "data": {"k": "v"},
    }
    cluster.kubectl("apply", "-f", "-", input=json.dumps(owned))
    assert run(cluster, f"{ns} get configmap owned -o name") == "configmap/owned\n"
    run(cluster, f"{ns} delete configmap owner")

    def owned_gone() -> bool:
        return run(cluster, f"{ns} get configmap owned --ignore-not-found -o name") == ""

    wait_until(owned_gone, timeout=60, what="the garbage collector to delete 'owned'")


def test_rbac_is_enforced(cluster: Cluster, namespace: str) -> None:
    ns = f"-n {namespace}"
    question = f"create configmaps {ns} --as=system:serviceaccount:{namespace}:nobody"
    denied = can_i(cluster, question)
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")
    run(cluster, f"{ns} create role cm-writer --verb=create --resource=configmaps")
    run(
        cluster,
        f"{ns} create rolebinding cm-writer --role=cm-writer --serviceaccount={namespace}:nobody",
    )
    allowed = can_i(cluster, question)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes")


@pytest.mark.parametrize("grace", [5.0, 0.0], ids=["sigterm", "sigkill"])
def test_apiserver_restart_keeps_data(cluster: Cluster, namespace: str, grace: float) -> None:
    if cluster.existing:
        pytest.skip("cannot restart the API server of an existing cluster")
    ns = f"-n {namespace}"
    run(cluster, f"{ns} create configmap survivor --from-literal=a=1")
    cluster.stop_apiserver(grace)
    assert not cluster.apiserver_running
    assert cluster.kubectl("get", "--raw", "/readyz", check=False).returncode != 0
    cluster.start_apiserver()
    assert run(cluster, f"{ns} get configmap survivor -o jsonpath={{.data.a}}") == "1"
