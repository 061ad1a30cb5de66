"""Shared API of edge-runner: CRD models and the operator -> runner wire format.

Imported by both the runner (data plane) and the operator (control plane);
neither of those imports the other.  Everything here is pure (no I/O) except
:mod:`edge_api.k8s`, which sets up the Kubernetes client both planes use.
"""

from edge_api.constants import API_VERSION, GROUP, VERSION
from edge_api.models import (
    EdgeFunction,
    EdgeFunctionSpec,
    EdgeRoute,
    EdgeRouteSpec,
    ManifestError,
    parse_manifest,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "EdgeFunction",
    "EdgeFunctionSpec",
    "EdgeRoute",
    "EdgeRouteSpec",
    "ManifestError",
    "parse_manifest",
]
