"""A real Ingress controller (Traefik v3) in front of runner processes, without a kubelet.

Sits in tests/support/ (imported as ``support.ingress``) for tests/helm/test_ingress.py.
Its one job is to put the chart's Ingress path together on the API server harness
(support.k8s) the way a cluster does, with local processes in place of pods:

* :func:`find_traefik` returns the binary that tests/ingress-bin/build.sh builds from
  the Go module proxy (cached outside the repo), or ``EDGE_TRAEFIK_BIN``.
* :func:`controller_identity` gives the controller a ServiceAccount of its own with
  only what Traefik's Kubernetes Ingress provider reads, and a token for it.
* :class:`PodEndpoints` plays the kubelet and the EndpointSlice controller for runner
  processes: it reads the chart's runner Service and Deployment from the API server,
  selects the Deployment's pods with the Service's selector (no match: no endpoints,
  as in a cluster), resolves each Service port's ``targetPort`` to a container port
  of the pod template and that to the process's real port through the ``--port`` /
  ``--admin-port`` arguments of the container, and writes one EndpointSlice per
  process (labelled ``kubernetes.io/service-name``, with ready/serving/terminating
  conditions as a kubelet would report them).  EndpointSlices may not hold loopback
  addresses, so each process listens on a non-loopback address of this machine
  (:func:`local_addresses`): Traefik keeps one server per address.
* :class:`Traefik` runs the controller with its kubernetesIngress provider pointed at
  the harness (endpoint, token, CA), HTTP and HTTPS entry points on loopback and its
  API, from which :meth:`Traefik.servers` reads the servers it balances over.
* :func:`self_signed` makes the TLS Secret's certificate (with ``cryptography``).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.k8s import Cluster, wait_until
from support.runner import free_port, stop_process

TESTS_DIR = Path(__file__).resolve().parents[1]
BUILD_SCRIPT = TESTS_DIR / "ingress-bin" / "build.sh"
#: The controller name Traefik claims IngressClasses by.
CONTROLLER = "traefik.io/ingress-controller"
MANAGED_BY = "edge-runner-tests"
#: The runner's argument for each data/admin port, as the chart's Deployment passes it.
PORT_ARGS = ("--port", "--admin-port")

Manifest = dict[str, Any]


class IngressError(RuntimeError):
    """The controller could not be built or started, or the chart cannot be served."""


def find_traefik() -> Path:
    """The traefik binary that build.sh prints: ``EDGE_TRAEFIK_BIN`` (checked), else the
    cached build, else built now (once per machine)."""
    # stderr (progress lines of a first build) goes to ours.
    result = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True,
                            check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines or not os.access(lines[-1], os.X_OK):
        raise IngressError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    return Path(lines[-1])


def local_addresses() -> list[str]:
    """This machine's own non-loopback IPv4 and IPv6 source addresses (at most one each).

    A UDP ``connect`` sends nothing: it only asks the kernel's routing table which of
    the machine's addresses a packet to a documentation address would leave from."""
    found = []
    for family, target in ((socket.AF_INET, "203.0.113.1"), (socket.AF_INET6, "2001:db8::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect((target, 9))
            except OSError:
                continue
            address = str(sock.getsockname()[0])
        if not address.startswith(("127.", "::1", "fe80:")):
            found.append(address)
    return found


# --- the controller's identity ------------------------------------------------------------


def controller_rbac(namespace: str, name: str) -> list[Manifest]:
    """What Traefik's kubernetesIngress provider reads (client.go of the pinned version):
    Ingresses, Services, EndpointSlices and Secrets of the watched namespace; IngressClasses
    and Nodes cluster-wide.  Nothing is written (no ``ingressEndpoint`` is configured)."""
    read = ["get", "list", "watch"]
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]
    cluster_name = f"{namespace}:{name}"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": name, "namespace": namespace}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": name, "namespace": namespace},
         "rules": [{"apiGroups": [""], "resources": ["services", "secrets"], "verbs": read},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                    "verbs": read},
                   {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"],
                    "verbs": read}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": name, "namespace": namespace},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": subject},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": cluster_name},
         "rules": [{"apiGroups": ["networking.k8s.io"], "resources": ["ingressclasses"],
                    "verbs": read},
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": read}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": cluster_name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": cluster_name},
         "subjects": subject},
    ]


def controller_identity(cluster: Cluster, namespace: str, name: str = "ingress-controller"
                        ) -> tuple[str, list[Manifest]]:
    """Applies :func:`controller_rbac` and waits until the API server's authorizer
    grants it; returns a token of the account and the objects."""
    objects = controller_rbac(namespace, name)
    cluster.kubectl("apply", "-f", "-", input="\n---\n".join(map(yaml.safe_dump, objects)))
    account = f"--as=system:serviceaccount:{namespace}:{name}"

    def granted() -> bool:
        return all(cluster.kubectl("auth", "can-i", "watch", *args, account, check=False)
                   .stdout.strip() == "yes"
                   for args in (["ingresses.networking.k8s.io", "-n", namespace], ["nodes"]))

    wait_until(granted, timeout=30, what="RBAC granting the controller's role")
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration=2h"
                            ).stdout.strip()
    return token, objects


def api_server(cluster: Cluster, ca_file: Path) -> str:
    """The URL of the cluster's API server (from its admin kubeconfig), whose CA
    certificate is written to ``ca_file``."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    contexts = {c["name"]: c["context"] for c in config["contexts"]}
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    entry = clusters[contexts[config["current-context"]]["cluster"]]
    ca_file.write_bytes(base64.b64decode(entry["certificate-authority-data"]))
    return str(entry["server"])


def ingress_class(name: str) -> Manifest:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name}, "spec": {"controller": CONTROLLER}}


# --- endpoints for processes ----------------------------------------------------------------


class PodEndpoints:
    """EndpointSlices of one Service for local processes standing in for its pods."""

    def __init__(self, cluster: Cluster, namespace: str, service: str, deployment: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.service = service
        self.deployment = deployment

    def _get(self, kind: str, name: str) -> Manifest:
        out = self.cluster.kubectl("get", kind, name, "-n", self.namespace, "-o", "json")
        obj: Manifest = json.loads(out.stdout)
        return obj

    def ports(self, process_ports: dict[str, int]) -> list[Manifest]:
        """The EndpointSlice ports of a pod of the Deployment whose container was started
        with ``process_ports`` (``{"--port": 41234, "--admin-port": 41235}``) mapped from
        the container ports the chart declares.  Fails as a cluster would: a selector
        that does not select the pod template gives no endpoints (IngressError), a
        ``targetPort`` that names no container port gives no port."""
        service = self._get("service", self.service)
        template = self._get("deployment", self.deployment)["spec"]["template"]
        selector = service["spec"].get("selector") or {}
        labels = template["metadata"].get("labels") or {}
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            raise IngressError(f"service {self.service} selects {selector}: no pod of "
                               f"deployment {self.deployment} ({labels}) is an endpoint")
        containers = template["spec"]["containers"]
        by_name = {p["name"]: p for c in containers for p in c.get("ports") or [] if "name" in p}
        remap = _port_remap(containers, process_ports)
        ports = []
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = by_name[target]["containerPort"] if isinstance(target, str) \
                and target in by_name else target
            if not isinstance(number, int) or number not in remap:
                continue  # the endpoint controller leaves an unresolvable port out
            entry = {"name": port.get("name", ""), "port": remap[number],
                     "protocol": port.get("protocol", "TCP")}
            if "appProtocol" in port:
                entry["appProtocol"] = port["appProtocol"]
            ports.append(entry)
        return ports

    def publish(self, name: str, address: str, process_ports: dict[str, int], *,
                ready: bool = True, terminating: bool = False) -> None:
        """Create or replace the EndpointSlice of the process ``name`` at ``address``."""
        family = "IPv6" if ":" in address else "IPv4"
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{self.service}-{name}", "namespace": self.namespace,
                         "labels": {"kubernetes.io/service-name": self.service,
                                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
            "addressType": family,
            "ports": self.ports(process_ports),
            "endpoints": [{"addresses": [address], "targetRef": {
                "kind": "Pod", "name": name, "namespace": self.namespace},
                "conditions": {"ready": ready and not terminating,
                               "serving": ready, "terminating": terminating}}],
        }
        self.cluster.kubectl("apply", "-f", "-", input=json.dumps(slice_))


def _port_remap(containers: list[Manifest], process_ports: dict[str, int]) -> dict[int, int]:
    """Container port number -> the process's port, through ``--port=N`` style arguments."""
    remap: dict[int, int] = {}
    for container in containers:
        for arg in container.get("args") or []:
            flag, _, value = str(arg).partition("=")
            if flag in process_ports and value.isdigit():
                remap[int(value)] = process_ports[flag]
    return remap


# --- the controller process -----------------------------------------------------------------


class Traefik:
    """One traefik process with the kubernetesIngress provider, on loopback ports."""

    def __init__(self, binary: Path, cluster: Cluster, namespace: str, token: str) -> None:
        self.binary = binary
        ca_file = Path(tempfile.mkstemp(prefix="traefik-ca-", suffix=".crt")[1])
        server = api_server(cluster, ca_file)
        self.http_port, self.https_port, self.api_port = free_port(), free_port(), free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="traefik-", suffix=".log")[1])
        self.argv = [
            str(binary),
            f"--entryPoints.web.address=127.0.0.1:{self.http_port}",
            f"--entryPoints.websecure.address=127.0.0.1:{self.https_port}",
            # As Traefik's own chart does: every router on websecure is a TLS router,
            # with the certificate of the Ingress's TLS Secret for its host (SNI).
            "--entryPoints.websecure.http.tls=true",
            f"--entryPoints.traefik.address=127.0.0.1:{self.api_port}",
            "--api.insecure=true", "--ping=true",
            "--providers.kubernetesIngress=true",
            f"--providers.kubernetesIngress.endpoint={server}",
            f"--providers.kubernetesIngress.token={token}",
            f"--providers.kubernetesIngress.certAuthFilePath={ca_file}",
            f"--providers.kubernetesIngress.namespaces={namespace}",
            "--global.checkNewVersion=false", "--global.sendAnonymousUsage=false",
            "--log.level=DEBUG", "--accessLog=true",
        ]
        self.process: subprocess.Popen[bytes] | None = None
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=5.0)

    def start(self) -> Self:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT)

        def pinged() -> bool:
            self.check_alive()
            try:
                return self.api.get("/ping").status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(pinged, timeout=60, what="traefik /ping")
        return self

    def check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise IngressError(f"traefik is not running:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def servers(self, service: str) -> list[str]:
        """The URLs of the servers Traefik balances over for the Kubernetes Service
        ``service`` (from its API; [] while it has no such service)."""
        self.check_alive()
        found: list[str] = []
        for item in self.api.get("/api/http/services").json():
            balancer = item.get("loadBalancer") or {}
            if item.get("provider") == "kubernetes" and f"-{service}-" in item["name"]:
                found += [server["url"] for server in balancer.get("servers") or []]
        return sorted(found)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.api.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


# --- TLS ------------------------------------------------------------------------------------


def self_signed(hosts: list[str]) -> tuple[bytes, bytes]:
    """A self-signed server certificate for ``hosts`` and its key (PEM each)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


__all__ = [
    "CONTROLLER",
    "IngressError",
    "PodEndpoints",
    "Traefik",
    "api_server",
    "controller_identity",
    "controller_rbac",
    "find_traefik",
    "ingress_class",
    "local_addresses",
    "self_signed",
]
