"""Build and read edge-runner custom objects in tests (YAML in, JSON out via kubectl).

Sits in tests/support/ (imported as ``support.objects``): manifests for
EdgeFunctions, EdgeRoutes and ConfigMaps, and readers of conditions and of
which field manager owns them.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from support.k8s import Cluster


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    """The object as JSON, or {} if it does not exist."""
    out = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions", []):
        if item["type"] == kind:
            return dict(item)
    return {}


def function_yaml(name: str, wasm: bytes, *, extra: str = "") -> str:
    """An EdgeFunction with an inline module (``extra`` is appended under spec)."""
    return f"""apiVersion: edgerunner.dev/v1alpha1
kind: EdgeFunction
metadata: {{name: {name}}}
spec:
  source: {{inline: "{base64.b64encode(wasm).decode()}"}}
{extra}"""


def route_yaml(name: str, path: str, function: str) -> str:
    return f"""apiVersion: edgerunner.dev/v1alpha1
kind: EdgeRoute
metadata: {{name: {name}}}
spec:
  rules: [{{match: {{path: {path}}}, function: {function}}}]
"""


def items(cluster: Cluster, namespace: str, kind: str) -> list[dict[str, Any]]:
    """Every object of ``kind`` in ``namespace``, as JSON, with ``managedFields``."""
    out = cluster.kubectl("get", kind, "-n", namespace, "-o", "json", "--show-managed-fields")
    return list(json.loads(out.stdout)["items"])


def condition_managers(obj: dict[str, Any], kind: str) -> set[str]:
    """The field managers (managedFields) that own the status condition of type ``kind``."""
    key = f'k:{{"type":"{kind}"}}'
    return {
        entry["manager"] for entry in obj["metadata"].get("managedFields") or []
        if key in ((entry.get("fieldsV1") or {}).get("f:status") or {}).get("f:conditions", {})
    }


def configmap_yaml(name: str, data: dict[str, str], *, labels: dict[str, str] | None = None
                   ) -> str:
    """A ConfigMap (JSON is YAML) with ``data`` and optional labels."""
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = labels
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata,
                       "data": data})
