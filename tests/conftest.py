"""Shared fixtures: manifest folders, real runner processes, and the real API server.

``cluster`` (session): a started :class:`support.k8s.Cluster` (local etcd +
kube-apiserver + kube-controller-manager, or an existing cluster given by
``KUBECONFIG`` with ``EDGE_USE_EXISTING_CLUSTER=1``); it starts only when a test
asks for it.  ``crds`` (session): the CRDs of crds/ applied and Established.
``namespace`` (function): a fresh namespace for one test, deleted afterwards.
``helm`` (session): a :class:`support.helm.Helm` for charts/edge-runner with private
HELM_* directories. ``identities`` (function): the chart's ServiceAccounts and RBAC in
the test's namespace, with a kubeconfig per account (:mod:`support.identities`); runners
and operators of the Kubernetes tests run with them, never as the admin, and a request
the chart's RBAC refuses fails the test.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.helm import Helm, find_helm
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.runner import RunnerProcess
from support.wasm import REPO_ROOT, build_function

CRDS_DIR = REPO_ROOT / "crds"


@pytest.fixture(scope="session")
def hello_wasm() -> Path:
    return build_function("hello-world")


@pytest.fixture(scope="session")
def wagi_wasm() -> Path:
    return build_function("wagi-hello")


@pytest.fixture
def manifest_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "manifests"
    folder.mkdir()
    return folder


@pytest.fixture(scope="session")
def samples_dir(
    tmp_path_factory: pytest.TempPathFactory, hello_wasm: Path, wagi_wasm: Path
) -> Path:
    """A copy of the hello-world and wagi-hello sample folders with their built modules."""
    root = tmp_path_factory.mktemp("samples")
    for name in ("hello-world", "wagi-hello"):
        source = hello_wasm.parent.parent / name
        shutil.copytree(source / "manifests", root / name / "manifests")
        module = hello_wasm if name == "hello-world" else wagi_wasm
        shutil.copy(module, root / name / module.name)
    return root


@pytest.fixture(scope="module")
def samples_runner(samples_dir: Path) -> Iterator[RunnerProcess]:
    with RunnerProcess(samples_dir) as runner:
        yield runner


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with Cluster() as started:
        yield started


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> list[str]:
    """Apply every CRD in crds/ and wait until each is Established; their names."""
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS_DIR))
    names = sorted(cluster.kubectl("get", "-f", str(CRDS_DIR), "-o", "name").stdout.split())
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new namespace named after the test; deleted (without waiting) after it."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{stem.rstrip('-')}-{uuid.uuid4().hex[:6]}".lstrip("-")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found")


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_helm(), home=tmp_path_factory.mktemp("helm-home"))


@pytest.fixture
def identities(
    cluster: Cluster, crds: list[str], namespace: str, helm: Helm, tmp_path: Path
) -> Iterator[ChartIdentities]:
    """The chart's runner and operator identities in ``namespace``; fails the test if the
    API server refused any of their requests (a permission the chart lacks)."""
    chart = ChartIdentities(cluster, helm, namespace, tmp_path / "identities").install()
    try:
        yield chart
        refused = chart.forbidden()
        assert not refused, "the chart's RBAC refused:\n" + "\n".join(map(str, refused))
    finally:
        chart.remove()
