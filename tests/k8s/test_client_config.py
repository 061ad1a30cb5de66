"""How the runner and the operator find and authenticate to the API server
(edge_api.k8s), against the real one: a multi-file ``KUBECONFIG`` merged as
kubectl merges it, with relative certificate paths, and an exec credential
plugin (the way EKS, GKE and AKS hand out tokens)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.guests import constant_wat
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s


def _admin(cluster: Cluster) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cluster and user entries of the harness's admin kubeconfig."""
    document = yaml.safe_load(cluster.kubeconfig.read_text())
    return document["clusters"][0]["cluster"], document["users"][0]["user"]


def _serve_one(cluster: Cluster, namespace: str, env: dict[str, str], body: bytes) -> None:
    """An operator and a runner with ``env`` publish and serve a function."""
    with OperatorProcess(namespace, env) as operator, \
            RunnerProcess(None, extra_args=["--namespace", namespace], env=env) as runner:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function_yaml(
            "cfg", wat_to_wasm(constant_wat(body))) + "---\n" + route_yaml("cfg", "/cfg", "cfg"))
        wait_until(lambda: runner.client.get("/cfg").text == body.decode(), timeout=30,
                   what="served")
        wait_until(lambda: condition(get(cluster, namespace, "er", "cfg"), "Ready"), timeout=30)
        assert condition(get(cluster, namespace, "ef", "cfg"), "Ready")["status"] == "True"
        assert "Traceback" not in operator.log(), operator.log()[-3000:]


def test_multi_file_kubeconfig_with_relative_paths(
        cluster: Cluster, crds: list[str], namespace: str, tmp_path: Path) -> None:
    if cluster.existing:
        pytest.skip("needs the harness's own admin credentials")
    entry, user = _admin(cluster)
    creds = tmp_path / "creds"
    creds.mkdir()
    for name, data in (("ca.crt", entry["certificate-authority-data"]),
                       ("admin.crt", user["client-certificate-data"]),
                       ("admin.key", user["client-key-data"])):
        (creds / name).write_bytes(base64.b64decode(data))
    # The first file picks the context; the second defines it, the cluster and the
    # user, with files relative to itself; a later file may not override them.
    first = tmp_path / "a" / "config"
    first.parent.mkdir()
    first.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Config",
                                     "current-context": "split"}))
    second = creds / "config"
    second.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "ignored",
        "clusters": [{"name": "c", "cluster": {"server": entry["server"],
                                               "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": {"client-certificate": "admin.crt",
                                         "client-key": "admin.key"}}],
        "contexts": [{"name": "split", "context": {"cluster": "c", "user": "u",
                                                   "namespace": namespace}}],
    }))
    third = tmp_path / "late"
    third.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "split", "context": {"cluster": "c"}}],
    }))
    listing = os.pathsep.join([str(tmp_path / "missing"), str(first), str(second), str(third)])
    _serve_one(cluster, namespace, {**cluster.env(), "KUBECONFIG": listing}, b"merged")


@pytest.fixture
def service_account_token(cluster: Cluster, namespace: str) -> Iterator[str]:
    """A token of a new service account bound to cluster-admin (removed afterwards)."""
    cluster.kubectl("create", "serviceaccount", "exec-user", "-n", namespace)
    binding = f"{namespace}-exec-user"
    cluster.kubectl("create", "clusterrolebinding", binding, "--clusterrole=cluster-admin",
                    f"--serviceaccount={namespace}:exec-user")
    try:
        yield cluster.kubectl("create", "token", "exec-user", "-n", namespace,
                              "--duration=1h").stdout.strip()
    finally:
        cluster.kubectl("delete", "clusterrolebinding", binding, "--ignore-not-found")


def test_exec_credential_plugin(cluster: Cluster, crds: list[str], namespace: str,
                                tmp_path: Path, service_account_token: str) -> None:
    if cluster.existing:
        pytest.skip("needs the harness's own CA")
    entry, _user = _admin(cluster)
    calls = tmp_path / "calls.jsonl"
    plugin = tmp_path / "bin" / "token-plugin"
    plugin.parent.mkdir()
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": service_account_token}}
    plugin.write_text(f"""#!{sys.executable}
import json, os
with open({str(calls)!r}, "a") as out:
    out.write(json.dumps(os.environ.get("KUBERNETES_EXEC_INFO")) + "\\n")
print(json.dumps({credential!r}))
""")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = tmp_path / "config"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "c", "cluster": entry}],
        # No client certificate: the token from the plugin is the only credential.
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/token-plugin",
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "exec", "context": {"cluster": "c", "user": "u"}}],
    }))
    _serve_one(cluster, namespace, {**cluster.env(), "KUBECONFIG": str(config)}, b"exec")
    seen = [json.loads(line) for line in calls.read_text().splitlines()]
    # The operator (lightkube and kopf's login) and the runner each ran the plugin.
    assert len(seen) >= 3, seen
    info = json.loads(seen[0])
    assert info["kind"] == "ExecCredential"
    assert info["spec"] == {"interactive": False}
