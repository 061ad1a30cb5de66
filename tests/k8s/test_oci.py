"""``source.oci`` and large modules through a real operator and real runners
(docs/artifacts.md).

Real parts: the API server harness, the operator and runner processes with the chart's
identities (``operator.allowSecretRead`` on: both read the pull secret), Debian's
docker-registry as local processes (TLS from a CA made here + htpasswd, and an
anonymous one over plain HTTP listed as insecure), artifacts pushed with ``oras``.
Loopback is allowed with EDGE_OPERATOR_ALLOW_FETCH_FROM (the registries run there).

Checked: an oci function is served on every runner with ``status.artifact`` pinned to
the manifest and no secret in any ConfigMap; a moved tag rolls out (RUNNERS 2/2)
without restarts, each blob fetched once per runner; with the registry stopped,
serving continues (also for a runner restarted meanwhile, from its blob store) while
the operator reports RegistryUnreachable; each bad input is a condition with its
reason and the last good version keeps serving; a 20 MiB module deploys through oci
and through url, and a configMapRef module too big for the function ConfigMap travels
by reference.
"""

from __future__ import annotations

import hashlib
import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.fileserver import FileServer, Reply
from support.guests import constant_wat, sized_wat
from support.helm import Helm
from support.identities import ChartIdentities
from support.k8s import Cluster
from support.objects import get, route_yaml
from support.operator import OperatorProcess
from support.registry import LocalCA, Registry
from support.runner import RunnerProcess, metric_value, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

ONE = wat_to_wasm(constant_wat(b"one"))
TWO = wat_to_wasm(constant_wat(b"two"))
USER = ("alice", "s3cret")
ALLOW = "127.0.0.0/8"
#: A moved tag is seen at the next resync (60 s), then fetched by every runner.
RESYNC_BOUND = 60 + 30


def sha(module: bytes) -> str:
    return f"sha256:{hashlib.sha256(module).hexdigest()}"


def function(name: str, source: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeFunction",
                       "metadata": {"name": name}, "spec": {"source": source}})


def status(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(cluster, namespace, "ef", name).get("status") or {})


def ready(cluster: Cluster, namespace: str, name: str) -> tuple[str, str] | None:
    for item in status(cluster, namespace, name).get("conditions", []):
        if item["type"] == "Ready":
            return item["status"], item["reason"]
    return None


def fetched(runner: RunnerProcess, kind: str) -> float:
    """edge_artifact_fetched_bytes_total{kind} of a runner."""
    return metric_value(runner.metrics(), "edge_artifact_fetched_bytes_total", {"kind": kind})


@pytest.fixture
def chart(cluster: Cluster, crds: list[str], namespace: str, helm: Helm, tmp_path: Path
          ) -> Iterator[ChartIdentities]:
    """The chart's identities with operator.allowSecretRead (pull secrets)."""
    identities = ChartIdentities(cluster, helm, namespace, tmp_path / "identities",
                                 values={"operator": {"allowSecretRead": True}}).install()
    try:
        yield identities
        refused = identities.forbidden()
        assert not refused, "the chart's RBAC refused:\n" + "\n".join(map(str, refused))
    finally:
        identities.remove()


@pytest.fixture
def anonymous(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "anonymous") as registry:
        yield registry


def serves(runners: list[RunnerProcess], path: str, body: str) -> bool:
    return all(r.client.get(path).text == body for r in runners)


def test_an_oci_function_rolls_out_and_survives_the_registry(
        cluster: Cluster, namespace: str, chart: ChartIdentities, tmp_path: Path) -> None:
    ca = LocalCA.make(tmp_path / "ca")
    registry = Registry(tmp_path / "private", ca=ca, users=dict([USER])).start()
    try:
        first = registry.push("fn/hello:v1", ONE, cncf=True, user=USER)
        cluster.kubectl("create", "secret", "docker-registry", "regcred", "-n", namespace,
                        f"--docker-server={registry.host}", f"--docker-username={USER[0]}",
                        f"--docker-password={USER[1]}")
        trust = {"SSL_CERT_FILE": str(ca.ca_file)}
        operator = OperatorProcess(namespace, chart.operator_env(
            EDGE_OPERATOR_ALLOW_FETCH_FROM=ALLOW, **trust)).start()
        caches = [tempfile.mkdtemp(prefix="edge-cache-") for _ in range(2)]
        runners = [RunnerProcess(None, env=chart.runner_env(**trust), extra_args=[
            "--namespace", namespace, "--cache-dir", cache]).start() for cache in caches]
        try:
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input=function(
                "hello", {"oci": {"ref": f"{registry.host}/fn/hello:v1",
                                  "pullSecretRef": {"name": "regcred"}}})
                + "\n---\n" + route_yaml("hello", "/hello", "hello"))
            wait_until(lambda: serves(runners, "/hello", "one"), timeout=60,
                       what="ONE served by both runners")
            wait_until(lambda: status(cluster, namespace, "hello").get("runners") == "2/2",
                       timeout=30, what="RUNNERS 2/2")
            got = status(cluster, namespace, "hello")
            assert (got["artifact"], got["digest"], got["size"]) == (
                f"{registry.host}/fn/hello@{first}", sha(ONE), len(ONE))
            published = get(cluster, namespace, "configmap", "edgefn-hello")
            assert "binaryData" not in published
            assert USER[1] not in json.dumps(published)

            # The tag moves: the next resync rolls it out, no runner restarts.
            pids = [r.process.pid for r in runners if r.process]
            second = registry.push("fn/hello:v1", TWO, cncf=True, user=USER)
            wait_until(lambda: serves(runners, "/hello", "two"), timeout=RESYNC_BOUND,
                       interval=0.5, what="TWO served by both runners after the tag moved")
            wait_until(lambda: status(cluster, namespace, "hello").get("artifact") ==
                       f"{registry.host}/fn/hello@{second}" and
                       status(cluster, namespace, "hello").get("runners") == "2/2",
                       timeout=30, what="status pinned to the new manifest, 2/2")
            assert [r.process.pid for r in runners if r.process] == pids
            assert all(r.alive() for r in runners)
            assert [fetched(r, "oci") for r in runners] == [len(ONE) + len(TWO)] * 2

            # The registry stops: serving goes on; a restarted runner loads from disk.
            registry.stop()
            wait_until(lambda: ready(cluster, namespace, "hello") ==
                       ("False", "RegistryUnreachable"), timeout=RESYNC_BOUND, interval=0.5,
                       what="RegistryUnreachable reported")
            assert all(serves(runners, "/hello", "two") for _ in range(10))
            runners[0].stop()
            runners[0] = RunnerProcess(None, env=chart.runner_env(**trust), extra_args=[
                "--namespace", namespace, "--cache-dir", caches[0]]).start()
            wait_until(lambda: serves(runners, "/hello", "two"), timeout=30,
                       what="TWO served by a runner restarted while the registry is down")
            assert fetched(runners[0], "oci") == 0
        finally:
            for runner in runners:
                runner.stop()
            operator.stop()
    finally:
        registry.stop()


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port bound and never listening: connections to it are refused."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


def test_bad_oci_inputs_each_have_a_reason(cluster: Cluster, namespace: str,
                                           chart: ChartIdentities, anonymous: Registry,
                                           refusing_port: int) -> None:
    host = anonymous.host
    anonymous.push("fn/good:v1", ONE)
    anonymous.push("fn/text:v1", b"not wasm", media_type="text/plain")
    big = wat_to_wasm(sized_wat(b"big", 3 << 20))
    anonymous.push("fn/big:v1", big)
    corrupt = wat_to_wasm(constant_wat(b"corrupt"))
    anonymous.push("fn/corrupt:v1", corrupt)
    digest = sha(corrupt)[7:]
    (anonymous.folder / f"data/docker/registry/v2/blobs/sha256/{digest[:2]}/{digest}/data"
     ).write_bytes(b"\0" * len(corrupt))
    sources: dict[str, dict[str, Any]] = {
        "good": {"oci": {"ref": f"{host}/fn/good:v1"}},
        "missing": {"oci": {"ref": f"{host}/fn/good:nope"}},
        "text": {"oci": {"ref": f"{host}/fn/text:v1"}},
        "big": {"oci": {"ref": f"{host}/fn/big:v1"}},
        "corrupt": {"oci": {"ref": f"{host}/fn/corrupt:v1"}},
        "down": {"oci": {"ref": f"127.0.0.1:{refusing_port}/fn/good:v1"}},
        "nosecret": {"oci": {"ref": f"{host}/fn/good:v1", "pullSecretRef": {"name": "absent"}}},
    }
    env = chart.operator_env(EDGE_OPERATOR_ALLOW_FETCH_FROM=ALLOW,
                             EDGE_OPERATOR_INSECURE_REGISTRIES=host,
                             EDGE_OPERATOR_MAX_MODULE_BYTES=str(2 << 20))
    with OperatorProcess(namespace, env), RunnerProcess(
            None, env=chart.runner_env(), extra_args=["--namespace", namespace]) as runner:
        cluster.kubectl("apply", "-n", namespace, "-f", "-",
                        input="\n---\n".join(function(n, s) for n, s in sources.items())
                        + "\n---\n" + route_yaml("good", "/good", "good"))
        def settled() -> dict[str, tuple[str, str] | None] | None:
            found = {name: ready(cluster, namespace, name) for name in sources}
            return found if all(found.values()) else None

        found = wait_until(settled, timeout=60, what="Ready of every function")
        assert found == {
            "good": ("True", "Published"),
            "missing": ("False", "TagNotFound"),
            "text": ("False", "NotWasmArtifact"),
            "big": ("False", "ModuleTooLarge"),
            "corrupt": ("False", "LayerDigestMismatch"),
            "down": ("False", "RegistryUnreachable"),
            "nosecret": ("False", "PullSecretNotFound"),
        }
        for name in sources.keys() - {"good"}:
            assert not get(cluster, namespace, "configmap", f"edgefn-{name}"), name
        wait_until(lambda: runner.client.get("/good").text == "one", timeout=30,
                   what="good served")

        # The tag of a served function disappears: reported, the last good one serves on.
        cluster.kubectl("patch", "ef", "good", "-n", namespace, "--type=merge", "-p",
                        json.dumps({"spec": {"source": {"oci": {"ref": f"{host}/fn/good:gone"}}}}))
        wait_until(lambda: ready(cluster, namespace, "good") == ("False", "TagNotFound"),
                   timeout=30, what="TagNotFound after the edit")
        assert all(runner.client.get("/good").text == "one" for _ in range(10))


def test_a_20_mib_module_deploys_through_oci_and_url(
        cluster: Cluster, namespace: str, chart: ChartIdentities, anonymous: Registry,
        tmp_path: Path) -> None:
    by_oci = wat_to_wasm(sized_wat(b"big oci", 20 << 20))
    by_url = wat_to_wasm(sized_wat(b"big url", 20 << 20))
    # Fits the user's ConfigMap (1 MiB) but not the function ConfigMap with its spec.
    by_configmap = wat_to_wasm(sized_wat(b"big cm", 1_030_000))
    (tmp_path / "cm.wasm").write_bytes(by_configmap)
    cluster.kubectl("create", "configmap", "mods", "-n", namespace,
                    f"--from-file=module.wasm={tmp_path / 'cm.wasm'}")
    manifest = anonymous.push("fn/big:v1", by_oci)
    with FileServer() as files:
        files.routes["/big.wasm"] = Reply(body=by_url)
        env = chart.operator_env(EDGE_OPERATOR_ALLOW_FETCH_FROM=ALLOW,
                                 EDGE_OPERATOR_INSECURE_REGISTRIES=anonymous.host)
        with OperatorProcess(namespace, env), RunnerProcess(
                None, env=chart.runner_env(), extra_args=["--namespace", namespace]) as runner:
            cluster.kubectl("apply", "-n", namespace, "-f", "-", input="\n---\n".join([
                function("big-oci", {"oci": {"ref": f"{anonymous.host}/fn/big:v1"}}),
                function("big-url", {"url": {"url": files.url + "/big.wasm",
                                             "sha256": sha(by_url)[7:]}}),
                function("big-cm", {"configMapRef": {"name": "mods"}}),
                route_yaml("big-oci", "/oci", "big-oci"),
                route_yaml("big-url", "/url", "big-url"),
                route_yaml("big-cm", "/cm", "big-cm")]))
            wait_until(lambda: runner.client.get("/oci").text == "big oci" and
                       runner.client.get("/url").text == "big url" and
                       runner.client.get("/cm").text == "big cm", timeout=120,
                       interval=0.5, what="the 20 MiB modules and the 1 MB one served")
            assert status(cluster, namespace, "big-oci")["artifact"] == \
                f"{anonymous.host}/fn/big@{manifest}"
            assert status(cluster, namespace, "big-url")["size"] == len(by_url) > 20 << 20
            for name in ("big-oci", "big-url", "big-cm"):
                assert "binaryData" not in get(cluster, namespace, "configmap", f"edgefn-{name}")
            assert (fetched(runner, "oci"), fetched(runner, "url"),
                    fetched(runner, "configMap")) == (len(by_oci), len(by_url),
                                                      len(by_configmap))
            assert 'edge_module_compile_seconds_count' in runner.metrics()
