"""Fixtures of the chart tests (tests/helm/).

``helm`` (session): a :class:`support.helm.Helm` for charts/edge-runner with
private HELM_* directories. ``cluster`` and ``namespace`` come
from tests/conftest.py.
"""

from __future__ import annotations

import pytest

from support.helm import Helm, find_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_helm(), home=tmp_path_factory.mktemp("helm-home"))
