"""Build and read edge-runner custom objects in tests (YAML in, JSON out via kubectl)."""

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
