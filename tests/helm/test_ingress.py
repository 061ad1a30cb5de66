"""HTTP through a real Ingress controller: the chart's Ingress, served by Traefik v3.

The chart is installed with `helm install` (Ingress on, TLS from a Secret made here)
into the API server harness; the operator and two runners run as local processes with
the chart's own ServiceAccounts (support.identities); Traefik (tests/ingress-bin) runs
as a local process with an identity of its own and discovers the runners the way it
does in a cluster: Ingress -> the chart's Service -> its EndpointSlices, which
support.ingress.PodEndpoints writes for the processes from the chart's Service and
Deployment as the kubelet and the EndpointSlice controller would for pods.  Every
request below goes client -> Traefik (HTTPS) -> runner.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support.guests import echo_wat
from support.helm import Helm
from support.identities import ChartIdentities
from support.ingress import (
    PodEndpoints,
    Traefik,
    controller_identity,
    find_traefik,
    ingress_class,
    local_addresses,
    self_signed,
)
from support.k8s import Cluster
from support.objects import function_yaml
from support.operator import OperatorProcess
from support.runner import RunnerProcess, metric_value, wait_until
from support.wasm import wat_to_wasm

pytestmark = pytest.mark.k8s

RELEASE = "edge"
SERVICE = f"{RELEASE}-edge-runner-runner"  # the chart's runner Service and Deployment
ALPHA, BETA = "alpha.example.test", "beta.example.test"
TLS_SECRET = "edge-tls"
#: The echo guest has 40 pages of memory: the request envelope must fit.
LARGE_BODY = 2 * 2**20
MAX_REQUEST = "3Mi"


@dataclass
class Stack:
    cluster: Cluster
    namespace: str
    identities: ChartIdentities
    endpoints: PodEndpoints
    traefik: Traefik
    runners: dict[str, RunnerProcess]
    addresses: dict[str, str]
    cert_pem: bytes
    stack: ExitStack

    def client(self) -> httpx.Client:
        """HTTPS to Traefik, trusting only the Secret's certificate."""
        context = ssl.create_default_context(cadata=self.cert_pem.decode())
        return httpx.Client(base_url=f"https://127.0.0.1:{self.traefik.https_port}",
                            verify=context, timeout=30.0)

    def start_runner(self, name: str) -> RunnerProcess:
        env = self.identities.runner_env(POD_NAME=f"{SERVICE}-{name}")
        runner = RunnerProcess(None, env=env, extra_args=[
            "--namespace", self.namespace, "--host", self.addresses[name], "--grace", "5"])
        self.stack.enter_context(runner)
        self.runners[name] = runner
        return runner

    def publish(self, name: str, *, ready: bool = True, terminating: bool = False) -> None:
        runner = self.runners[name]
        self.endpoints.publish(name, self.addresses[name],
                               {"--port": runner.port, "--admin-port": runner.admin_port},
                               ready=ready, terminating=terminating)

    def server_url(self, name: str) -> str:
        address = self.addresses[name]
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self.runners[name].port}"


def get(client: httpx.Client, host: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request for ``host`` (SNI and Host header) through Traefik's HTTPS port."""
    method = kwargs.pop("method", "GET")
    headers = {"host": host, **kwargs.pop("headers", {})}
    return client.request(method, path, headers=headers,
                          extensions={"sni_hostname": host}, **kwargs)


def apply(cluster: Cluster, namespace: str, *docs: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input="\n---\n".join(docs))


def functions_and_routes(hello: bytes, wagi: bytes) -> list[str]:
    """hello-world and wagi-hello behind the same path on two hosts, an echo and a
    function that cannot load (bytes that are not WebAssembly) on other paths."""
    routes = {
        "alpha": (ALPHA, [("/hello", "hello-world"), ("/echo", "echo")]),
        "beta": (BETA, [("/hello", "wagi-hello"), ("/broken", "broken")]),
    }
    docs = [
        function_yaml("hello-world", hello),
        function_yaml("wagi-hello", wagi, extra="  abi: wagi\n"),
        function_yaml("echo", wat_to_wasm(echo_wat()),
                      extra=f"  limits: {{maxRequestBytes: {MAX_REQUEST}}}\n"),
        function_yaml("broken", b"this is not WebAssembly"),
    ]
    for name, (host, rules) in routes.items():
        docs.append(yaml.safe_dump({
            "apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
            "metadata": {"name": name},
            "spec": {"hosts": [host], "rules": [
                {"match": {"path": path, "pathType": "Prefix"}, "function": function}
                for path, function in rules]}}))
    return docs


def loaded(runner: RunnerProcess) -> bool:
    functions = runner.functions()
    return all(functions.get(name, {}).get("state") == "ready"
               for name in ("hello-world", "wagi-hello", "echo"))


@pytest.fixture(scope="module")
def stack(  # noqa: PLR0917
        cluster: Cluster, crds: list[str], helm: Helm, hello_wasm: Path, wagi_wasm: Path,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    addresses = local_addresses()
    assert len(addresses) >= 2, f"two non-loopback addresses are needed, found {addresses}"
    traefik_bin = find_traefik()
    namespace = f"ingress-{uuid.uuid4().hex[:6]}"
    class_name = f"traefik-{namespace}"
    cluster.kubectl("create", "namespace", namespace)
    identities = ChartIdentities(cluster, helm, namespace, tmp_path_factory.mktemp("ids"))
    cert_pem, key_pem = self_signed([ALPHA, BETA])
    with ExitStack() as exits:
        exits.callback(cluster.kubectl, "delete", "namespace", namespace, "--wait=false")
        identities.install()
        exits.callback(identities.remove)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(ingress_class(class_name)))
        exits.callback(cluster.kubectl, "delete", "ingressclass", class_name, "--wait=false")
        values = {"ingress": {"enabled": True, "className": class_name, "hosts": [ALPHA, BETA],
                              "tls": [{"secretName": TLS_SECRET, "hosts": [ALPHA, BETA]}]}}
        helm.run("install", RELEASE, str(helm.chart), "--namespace", namespace,
                 "--take-ownership", *helm.values_args(values),
                 env={"KUBECONFIG": str(cluster.kubeconfig)})
        cluster.kubectl("create", "secret", "tls", TLS_SECRET, "-n", namespace,
                        f"--cert={write(tmp_path_factory, 'tls.crt', cert_pem)}",
                        f"--key={write(tmp_path_factory, 'tls.key', key_pem)}")
        token, rbac = controller_identity(cluster, namespace)
        for obj in rbac:
            if obj["kind"].startswith("Cluster"):
                exits.callback(cluster.kubectl, "delete", obj["kind"].lower(),
                               obj["metadata"]["name"], "--wait=false")
        exits.enter_context(OperatorProcess(namespace, identities.operator_env()))
        endpoints = PodEndpoints(cluster, namespace, SERVICE, SERVICE)
        traefik = Traefik(traefik_bin, cluster, namespace, token)
        result = Stack(cluster, namespace, identities, endpoints, traefik, {},
                       dict(zip("ab", addresses, strict=False)), cert_pem, exits)
        for name in "ab":
            result.start_runner(name)
            result.publish(name)
        exits.enter_context(traefik)
        apply(cluster, namespace, *functions_and_routes(hello_wasm.read_bytes(),
                                                         wagi_wasm.read_bytes()))
        wait_until(lambda: all(loaded(r) for r in result.runners.values()), timeout=60,
                   what="both runners serve the functions")
        want = sorted(result.server_url(name) for name in "ab")
        wait_until(lambda: traefik.servers(SERVICE) == want, timeout=30,
                   what=f"traefik balancing over {want}")
        yield result
        assert "forbidden" not in traefik.log(), "the controller's RBAC is short"
        refused = identities.forbidden()
        assert not refused, "the chart's RBAC refused:\n" + "\n".join(map(str, refused))


def write(factory: pytest.TempPathFactory, name: str, data: bytes) -> Path:
    path = factory.mktemp("tls") / name
    path.write_bytes(data)
    return path


# --- routing ------------------------------------------------------------------------------


def test_host_and_path_route_to_two_functions(stack: Stack) -> None:
    with stack.client() as client:
        hello = get(client, ALPHA, "/hello")
        wagi = get(client, BETA, "/hello")
        greeted = get(client, ALPHA, "/hello", method="POST", json={"name": "Ingress"})
    assert hello.status_code == 200, hello.text
    assert hello.text.strip() == "Hello, world!"
    assert wagi.status_code == 200, wagi.text
    assert "method: GET\npath: /hello\n" in wagi.text  # only wagi-hello tells these
    assert f"HTTP_HOST: {BETA}\n" in wagi.text  # the Host header reached the runner
    assert "HTTP_X_FORWARDED_PROTO: https\n" in wagi.text  # set by the controller
    assert greeted.json() == {"message": "Hello, Ingress!"}


def test_tls_serves_the_secret_certificate(stack: Stack) -> None:
    context = ssl.create_default_context(cadata=stack.cert_pem.decode())
    for host in (ALPHA, BETA):
        with socket.create_connection(("127.0.0.1", stack.traefik.https_port), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        assert ssl.DER_cert_to_PEM_cert(der).encode().split() == stack.cert_pem.split()


def test_a_large_post_body_reaches_the_function(stack: Stack) -> None:
    body = os.urandom(LARGE_BODY)
    with stack.client() as client:
        response = get(client, ALPHA, "/echo", method="POST", content=body)
    assert response.status_code == 200, response.text[:500]
    assert response.content.endswith(body)  # the request envelope ends with the body


def test_the_request_id_passes_through(stack: Stack) -> None:
    rid = f"ingress-{uuid.uuid4().hex}"
    with stack.client() as client:
        echoed = get(client, ALPHA, "/echo", method="POST", content=b"x",
                     headers={"x-request-id": rid})
        missing = get(client, ALPHA, "/nowhere", headers={"x-request-id": rid})
        minted = get(client, ALPHA, "/hello")
    assert echoed.headers["x-request-id"] == rid
    assert rid.encode() in echoed.content  # the guest saw it as its x-request-id header
    assert missing.headers["x-request-id"] == rid
    assert missing.json()["request_id"] == rid
    assert len(minted.headers["x-request-id"]) == 24


@pytest.mark.parametrize("case", [
    (ALPHA, "/nowhere", 0, 404, "no-route"),
    (ALPHA, "/echo", 3 * 2**20 + 1, 413, "body-too-large"),
    (BETA, "/broken", 0, 503, "not-loaded"),
], ids=["404", "413", "503"])
def test_problems_survive_the_proxy(stack: Stack, case: tuple[str, str, int, int, str]) -> None:
    host, path, size, status, slug = case
    with stack.client() as client:
        response = get(client, host, path, method="POST" if size else "GET",
                       content=b"\0" * size if size else None)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == f"https://edgerunner.dev/problems/{slug}"
    assert problem["request_id"] == response.headers["x-request-id"]
    if status == 503:
        assert response.headers["retry-after"] == "5"


# --- a runner restart behind the controller ---------------------------------------------


class Load:
    """Requests in a loop on another thread; records every answer that is not a 200."""

    def __init__(self, stack: Stack) -> None:
        self.client = stack.client()
        self.stop = threading.Event()
        self.sent = 0
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.sent += 1
            try:
                response = get(self.client, ALPHA, "/hello")
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.client.close()


def served(runner: RunnerProcess) -> float:
    return metric_value(runner.metrics(), "edge_requests_total",
                        {"function": "hello-world", "code": "200"})


def test_a_runner_restart_fails_no_request(stack: Stack) -> None:
    """As a kubelet does for a pod being replaced: the endpoint goes not ready and
    terminating first, the process stops only once the controller dropped it, and the
    new process is published when it is ready."""
    with Load(stack) as load:
        wait_until(lambda: load.sent > 20, timeout=30, what="requests flowing")
        stack.publish("a", ready=False, terminating=True)
        only_b = [stack.server_url("b")]
        wait_until(lambda: stack.traefik.servers(SERVICE) == only_b, timeout=30,
                   what="traefik dropped runner a")
        old = stack.runners["a"]
        assert old.terminate() == 0
        new = stack.start_runner("a")
        wait_until(lambda: loaded(new), timeout=60, what="the new runner a serves")
        stack.publish("a")
        both = sorted(stack.server_url(name) for name in "ab")
        wait_until(lambda: stack.traefik.servers(SERVICE) == both, timeout=30,
                   what="traefik balancing over the new runner a")
        wait_until(lambda: served(new) >= 5, timeout=30, what="requests reach the new runner")
        sent = load.sent
    assert load.failures == [], f"{len(load.failures)} of {sent} failed: {load.failures[:5]}"
