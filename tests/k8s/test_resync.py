"""The operator's resync at rest on a real API server: what did not change is not touched,
what changed is still handled (operator/edge_operator/rest.py).

The operator runs as the chart's ServiceAccount with ``--resync-interval 1``; the API
server's audit log (``Cluster.audit_log``) records each of its requests.  Over several
resyncs (counted by its lists of EdgeRoutes) no request names the quiet function, its
route or their ConfigMaps, while the function with an ``oci`` tag is resolved at each
resync; then a moved tag, an edited referenced ConfigMap, and a published ConfigMap
deleted or edited by someone are each handled without any spec change.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from support.audit import Audit
from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.registry import Registry
from support.runner import wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

ONE = wat_to_wasm(constant_wat(b"one"))
TWO = wat_to_wasm(constant_wat(b"two"))
QUIET = {"quiet", "edgefn-quiet", "edgeroute-quiet"}


def sha(module: bytes) -> str:
    return f"sha256:{hashlib.sha256(module).hexdigest()}"


def source_configmap(module: bytes) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "src"},
                       "binaryData": {"module.wasm": base64.b64encode(module).decode()}})


def function(name: str, source: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
                       "metadata": {"name": name}, "spec": {"source": source}})


def ready(cluster: Cluster, namespace: str, kind: str, name: str) -> bool:
    return condition(get(cluster, namespace, kind, name), "Ready").get("status") == "True"


def digest(cluster: Cluster, namespace: str, name: str) -> str | None:
    return (get(cluster, namespace, "ef", name).get("status") or {}).get("digest")


def test_the_resync_skips_what_did_not_change(cluster: Cluster, namespace: str,
                                              identities: ChartIdentities,
                                              tmp_path: Path) -> None:
    with Registry(tmp_path / "registry") as registry, OperatorProcess(
            namespace, identities.operator_env(
                EDGE_OPERATOR_RESYNC_INTERVAL="1", EDGE_OPERATOR_ALLOW_FETCH_FROM="127.0.0.0/8",
                EDGE_OPERATOR_INSECURE_REGISTRIES=registry.host)) as operator:
        registry.push("fn/tagged:v1", ONE, cncf=True)
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input="\n---\n".join([
            function_yaml("quiet", ONE), route_yaml("quiet", "/quiet", "quiet"),
            source_configmap(ONE), function("ref", {"configMapRef": {
                "name": "src", "key": "module.wasm"}}),
            function("tagged", {"oci": {"ref": f"{registry.host}/fn/tagged:v1"}})]))
        wait_until(lambda: all(ready(cluster, namespace, "ef", n)
                               for n in ("quiet", "ref", "tagged"))
                   and ready(cluster, namespace, "er", "quiet"),
                   timeout=60, what="every object Ready")
        # ... and counted by the rollout tracker (no runner: Propagated=False NoRunners).
        wait_until(lambda: all(condition(get(cluster, namespace, "ef", n), "Propagated")
                               for n in ("quiet", "ref", "tagged")),
                   timeout=30, what="every function's rollout counted")
        published = get(cluster, namespace, "configmap", "edgefn-quiet")

        # At rest: resyncs run, the quiet objects are not read or written, the tag is.
        audit = Audit(cluster, identities.account("operator"), namespace)
        wait_until(lambda: audit.resyncs() >= 4, timeout=60, what="four resyncs")
        requests = audit.requests()
        touched = [r for r in requests if r[2] in QUIET]
        assert not touched, f"the resync touched unchanged objects: {touched}"
        assert ("get", "edgefunctions", "tagged") in requests  # oci tags: every resync
        assert not [r for r in requests if r[0] in ("patch", "update", "create")], requests

        # A moved tag rolls out at the next resync.
        registry.push("fn/tagged:v1", TWO, cncf=True)
        wait_until(lambda: digest(cluster, namespace, "tagged") == sha(TWO), timeout=30,
                   what="the moved tag published")

        # An edited referenced ConfigMap is published again.
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=source_configmap(TWO))
        wait_until(lambda: digest(cluster, namespace, "ref") == sha(TWO), timeout=30,
                   what="the edited configMapRef published")

        # A published ConfigMap someone deletes, or edits, is repaired.
        cluster.kubectl("delete", "configmap", "edgefn-quiet", "-n", namespace)
        wait_until(lambda: get(cluster, namespace, "configmap", "edgefn-quiet").get(
            "binaryData") == published["binaryData"], timeout=30,
            what="the deleted ConfigMap written again")
        key, value = next(iter(published["binaryData"].items()))
        cluster.kubectl("patch", "configmap", "edgefn-quiet", "-n", namespace, "--type=merge",
                        "-p", json.dumps({"binaryData": {key: base64.b64encode(b"x").decode()}}))
        wait_until(lambda: get(cluster, namespace, "configmap", "edgefn-quiet")[
            "binaryData"][key] == value, timeout=30, what="the edited ConfigMap repaired")
        assert ready(cluster, namespace, "ef", "quiet")
        assert operator.process is not None and operator.process.poll() is None
