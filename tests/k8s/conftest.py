"""Fixtures for tests against a real Kubernetes API server (tests/k8s/).

``cluster`` (session): a started :class:`support.k8s.Cluster` (local etcd +
kube-apiserver + kube-controller-manager, or an existing cluster given by
``KUBECONFIG`` with ``EDGE_USE_EXISTING_CLUSTER=1``). ``crds`` (session): the
CRDs of crds/ applied and Established. ``namespace`` (function): a fresh
namespace for one test, deleted afterwards.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.k8s import Cluster

CRDS_DIR = Path(__file__).resolve().parents[2] / "crds"


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
