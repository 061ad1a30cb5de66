"""``abi: wasi-http`` in a cluster: the real API server, operator and runner processes.

The small hand-written component (tests/components/echo/echo.wat, 6 KB) goes
inline in an EdgeFunction; the operator validates it as a component and the
runner serves it.  A core module declared ``wasi-http`` is refused with a
condition.  Components over 1 MiB (componentize-py, jco) need a source that
can carry them, which ConfigMaps cannot (docs/resources.md).
"""

from __future__ import annotations

from typing import Any

import pytest

from support import components
from support.guests import constant_wat
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import condition, function_yaml, get, route_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s


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
