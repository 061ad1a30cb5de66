"""``abi: wasi-http`` in a cluster: the real API server, operator and runner processes.

The small hand-written component (tests/components/echo/echo.wat, 6 KB) goes
inline in an EdgeFunction; the operator validates it as a component and the
runner serves it.  A core module declared ``wasi-http`` is refused with a
condition.  A componentize-py component (about 18 MB, over what a ConfigMap
holds) travels by reference (docs/artifacts.md): ``source.url`` on a loopback
file server, fetched by the operator (loopback allowed with
EDGE_OPERATOR_ALLOW_FETCH_FROM) and then by the runner, which serves GET and a
POST echo.  That runner shares the disk cache of tests/runner/test_wasi_http.py
(compiled once, ~15 s) with the module's blob removed, so it downloads it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from support import components
from support.fileserver import FileServer, Reply
from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, metric_value, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

#: The disk cache of tests/runner/test_wasi_http.py: the componentize-py component
#: is compiled once for both (the runner's own module cache, --cache-dir).
MODULE_CACHE = components.CACHE / "test-module-cache"


def test_small_component_is_validated_and_served(
        cluster: Cluster, namespace: str, identities: ChartIdentities) -> None:
    wasi_http = "  abi: wasi-http\n"
    with OperatorProcess(namespace, identities.operator_env()) as operator, \
            RunnerProcess(None, extra_args=["--namespace", namespace],
                          env=identities.runner_env()) as runner:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input="---\n".join([
            function_yaml("echo", components.echo_component(), extra=wasi_http),
            route_yaml("echo", "/echo", "echo"),
            function_yaml("core", wat_to_wasm(constant_wat(b"core")), extra=wasi_http)]))
        wait_until(lambda: runner.client.get("/echo").status_code == 200, timeout=60,
                   what="component served")
        got = runner.client.post("/echo/a?b=1", content=b"body", headers={"x-probe": "k8s"})
        assert (got.status_code, got.content) == (200, b"body")
        assert got.headers["x-path"] == "/echo/a?b=1"
        assert got.headers["x-probe"] == "k8s"
        echo = get(cluster, namespace, "ef", "echo")
        assert condition(echo, "ModuleValid")["status"] == "True"
        assert runner.functions()["echo"]["abi"] == "wasi-http"

        def refused() -> dict[str, Any] | None:
            return condition(get(cluster, namespace, "ef", "core"), "ModuleValid") or None

        found = wait_until(refused, timeout=30, what="core module condition")
        assert (found["status"], found["reason"]) == ("False", "NotAComponent")
        assert operator.process is not None and operator.process.poll() is None


@pytest.fixture
def files() -> Iterator[FileServer]:
    with FileServer() as server:
        yield server


@pytest.mark.slow
def test_a_componentize_py_component_is_served_by_url_reference(
        cluster: Cluster, namespace: str, identities: ChartIdentities,
        files: FileServer) -> None:
    wasm = components.py_component()
    digest = hashlib.sha256(wasm).hexdigest()
    assert len(wasm) > 1 << 20
    files.routes["/py.wasm"] = Reply(body=wasm)
    # Compiled code stays cached; the blob goes, so the runner fetches the URL itself.
    MODULE_CACHE.mkdir(parents=True, exist_ok=True)
    (MODULE_CACHE / "blobs" / f"{digest}.wasm").unlink(missing_ok=True)
    function = {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
                "metadata": {"name": "py"},
                "spec": {"source": {"url": {"url": files.url + "/py.wasm", "sha256": digest}},
                         "abi": "wasi-http", "env": [{"name": "GREETING", "value": "hi"}],
                         "limits": {"memory": "96Mi", "timeout": "3s"}}}
    env = identities.operator_env(EDGE_OPERATOR_ALLOW_FETCH_FROM="127.0.0.0/8")
    with OperatorProcess(namespace, env), RunnerProcess(
            None, env=identities.runner_env(),
            extra_args=["--namespace", namespace, "--cache-dir", str(MODULE_CACHE)]) as runner:
        cluster.kubectl("apply", "-n", namespace, "-f", "-", input="---\n".join([
            json.dumps(function), route_yaml("py", "/py", "py")]))
        wait_until(lambda: runner.client.get("/py/a").status_code == 200, timeout=240,
                   interval=0.5, what="the componentize-py component served")
        got = runner.client.get("/py/a?x=1", headers={"x-probe": "k8s"})
        assert got.text.splitlines() == ["GET", "/py/a?x=1", "k8s", "hi"]
        assert got.headers["x-guest"] == "componentize-py"
        body = os.urandom(1 << 20)
        posted = runner.client.post("/py/echo", content=body,
                                    headers={"content-type": "application/x-test"})
        assert (posted.status_code, posted.headers["content-type"]) == \
            (200, "application/x-test")
        assert posted.content == body

        status = get(cluster, namespace, "ef", "py")["status"]
        assert (status["digest"], status["size"]) == (f"sha256:{digest}", len(wasm))
        assert condition(get(cluster, namespace, "ef", "py"), "ModuleValid")["status"] == "True"
        assert "binaryData" not in get(cluster, namespace, "configmap", "edgefn-py")
        assert metric_value(runner.metrics(), "edge_artifact_fetched_bytes_total",
                            {"kind": "url"}) == len(wasm)
        assert files.hits["/py.wasm"] >= 2  # the operator's download(s) and the runner's
        assert runner.functions()["py"]["abi"] == "wasi-http"
