"""How the runner and the operator find and authenticate to the API server
(edge_api.k8s), against the real one: a multi-file ``KUBECONFIG`` merged as
kubectl merges it, with relative certificate paths, and an exec credential
plugin (the way EKS, GKE and AKS hand out tokens).  The merged kubeconfig uses the
harness's admin client certificate (what is tested is how its files are found); the
exec plugins hand out the tokens of the chart's own ServiceAccounts (``identities``)."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.guests import constant_wat
from support.identities import ChartIdentities
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


def _serve_one(cluster: Cluster, namespace: str, env: dict[str, str], body: bytes,
               runner_env: dict[str, str] | None = None) -> None:
    """An operator with ``env`` and a runner with ``runner_env`` (default: the same)
    publish and serve a function."""
    with OperatorProcess(namespace, env) as operator, \
            RunnerProcess(None, extra_args=["--namespace", namespace],
                          env=runner_env or env) as runner:
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


def _exec_kubeconfig(cluster: Cluster, identities: ChartIdentities, component: str,
                     directory: Path) -> Path:
    """A kubeconfig whose only credential is an exec plugin printing the token of the
    chart's ``component`` ServiceAccount; the plugin logs each call to calls.jsonl."""
    entry, _user = _admin(cluster)
    token = yaml.safe_load(identities.kubeconfigs[component].read_text())["users"][0]["user"][
        "token"]
    plugin = directory / "bin" / "token-plugin"
    plugin.parent.mkdir(parents=True)
    credential = {"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
                  "status": {"token": token}}
    plugin.write_text(f"""#!{sys.executable}
import json, os
with open({str(directory.parent / "calls.jsonl")!r}, "a") as out:
    out.write(json.dumps(os.environ.get("KUBERNETES_EXEC_INFO")) + "\\n")
print(json.dumps({credential!r}))
""")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = directory / "config"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "exec",
        "clusters": [{"name": "c", "cluster": entry}],
        # No client certificate: the token from the plugin is the only credential.
        "users": [{"name": "u", "user": {"exec": {
            "apiVersion": "client.authentication.k8s.io/v1", "command": "./bin/token-plugin",
            "interactiveMode": "Never"}}}],
        "contexts": [{"name": "exec", "context": {"cluster": "c", "user": "u"}}],
    }))
    return config


def test_exec_credential_plugin(cluster: Cluster, namespace: str, tmp_path: Path,
                                identities: ChartIdentities) -> None:
    if cluster.existing:
        pytest.skip("needs the harness's own CA")
    configs = {component: _exec_kubeconfig(cluster, identities, component, tmp_path / component)
               for component in ("operator", "runner")}
    _serve_one(cluster, namespace, {**cluster.env(), "KUBECONFIG": str(configs["operator"])},
               b"exec", runner_env={**cluster.env(), "KUBECONFIG": str(configs["runner"])})
    seen = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    # The operator (lightkube and kopf's login) and the runner each ran the plugin.
    assert len(seen) >= 3, seen
    info = json.loads(seen[0])
    assert info["kind"] == "ExecCredential"
    assert info["spec"] == {"interactive": False}
