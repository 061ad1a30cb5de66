"""A real, local Kubernetes control plane for tests (docs/testing.md).

Sits in tests/support/ and is imported as ``support.k8s`` (pytest runs with
``pythonpath = ["tests"]``). :class:`Cluster` starts etcd, kube-apiserver and
kube-controller-manager as local processes on free loopback ports, the way
controller-runtime's envtest does, with certificates generated here, RBAC
authorization, an admin client certificate in ``system:masters`` and a
kubeconfig for it. The binaries come from ``EDGE_K8S_BIN_DIR`` or from
``tests/k8s-bins/build.sh`` (which builds them once into a cache outside the
repo). With ``EDGE_USE_EXISTING_CLUSTER=1`` and ``KUBECONFIG`` set, the given
cluster (e.g. kind) is used instead and nothing is started or stopped.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TESTS_DIR = Path(__file__).resolve().parents[1]
BINS_MODULE_DIR = TESTS_DIR / "k8s-bins"
BUILD_SCRIPT = BINS_MODULE_DIR / "build.sh"
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"  # a config value only: nothing is sent there
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
LOG_TAIL_LINES = 40
APISERVER_STOP_GRACE = 5.0
#: What the API server's audit log records: every request of a service account (the
#: runners and operators the tests start with the chart's own identities, see
#: support.identities), with its verb, resource and response code; nothing else.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
"""

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The control plane could not be found, built, started or controlled."""


class KubectlError(subprocess.CalledProcessError):
    """A kubectl call failed; unlike its base class, str() includes stderr."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr:\n{self.stderr}\nstdout:\n{self.output}"


def pinned_version() -> str:
    """The Kubernetes version pinned in tests/k8s-bins/go.mod, e.g. ``v1.35.4``."""
    for line in (BINS_MODULE_DIR / "go.mod").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "k8s.io/kubernetes" and fields[1].startswith("v"):
            return fields[1]
    raise ClusterError(f"no k8s.io/kubernetes requirement in {BINS_MODULE_DIR / 'go.mod'}")


def _has_binaries(directory: Path, names: Sequence[str] = BINARIES) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in names)


def find_bin_dir() -> Path:
    """The directory holding the four binaries, building them if needed.

    ``EDGE_K8S_BIN_DIR`` wins; otherwise build.sh is run, which returns at once
    when the binaries for the pinned version are already cached.
    """
    configured = os.environ.get("EDGE_K8S_BIN_DIR")
    if configured:
        directory = Path(configured)
        if not _has_binaries(directory):
            raise ClusterError(f"EDGE_K8S_BIN_DIR={configured} lacks one of {', '.join(BINARIES)}")
        return directory
    # stderr (progress lines of a first, long build) goes to ours.
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True, check=False
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ClusterError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    directory = Path(lines[-1])
    if not _has_binaries(directory):
        raise ClusterError(f"{BUILD_SCRIPT} printed {directory}, which lacks the binaries")
    return directory


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held open together so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (for error and assertion messages)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# --- certificates -----------------------------------------------------------


class _Pki:
    """Paths of the generated CA, serving, admin-client and service-account keys."""

    def __init__(self, directory: Path) -> None:
        self.ca_cert, self.ca_key = directory / "ca.crt", directory / "ca.key"
        self.serving_cert = directory / "apiserver.crt"
        self.serving_key = directory / "apiserver.key"
        self.admin_cert, self.admin_key = (
            directory / "admin.crt",
            directory / "admin.key",
        )
        self.sa_key, self.sa_pub = directory / "sa.key", directory / "sa.pub"


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                ]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write_pki(directory: Path) -> _Pki:
    directory.mkdir(mode=0o700)
    pki = _Pki(directory)

    def name(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    def write(path: Path, data: bytes) -> None:
        path.write_bytes(data)
        path.chmod(0o600)

    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name("edge-runner-test-ca")
    ca = _issue(ca_name, ca_key, ca_name, ca_key, ca=True)
    write(pki.ca_cert, ca.public_bytes(pem))
    write(pki.ca_key, _pem_key(ca_key))
    for cert_path, key_path, subject, server in (
        (pki.serving_cert, pki.serving_key, name("kube-apiserver"), True),
        (pki.admin_cert, pki.admin_key, name("admin", "system:masters"), False),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        write(
            cert_path,
            _issue(subject, key, ca_name, ca_key, server=server).public_bytes(pem),
        )
        write(key_path, _pem_key(key))
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write(pki.sa_key, _pem_key(sa_key))
    write(
        pki.sa_pub,
        sa_key.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo),
    )
    return pki


def _kubeconfig(server: str, pki: _Pki) -> str:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    return f"""apiVersion: v1
kind: Config
clusters:
- name: edge-test
  cluster:
    server: {server}
    certificate-authority-data: {b64(pki.ca_cert)}
users:
- name: admin
  user:
    client-certificate-data: {b64(pki.admin_cert)}
    client-key-data: {b64(pki.admin_key)}
contexts:
- name: edge-test
  context: {{cluster: edge-test, user: admin}}
current-context: edge-test
"""


# --- processes --------------------------------------------------------------


def _load_libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()  # loaded in the parent: the child after fork only calls it
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: SIGTERM the child when the test process dies, so no etcd leaks."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Process:
    """One control-plane process with its own log file (appended across restarts)."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"=== {time.strftime('%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Only a prctl call in the child: no locks, so safe with threads.
                preexec_fn=_die_with_parent,  # noqa: PLW1509
            )

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        popen, self.popen = self.popen, None
        if popen is None:
            return
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM if timeout > 0 else signal.SIGKILL)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

    def failure(self, what: str) -> ClusterError:
        return ClusterError(f"{self.name} {what}; last lines of {self.log}:\n{log_tail(self.log)}")


def _http_ok(url: str, context: ssl.SSLContext | None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _wait_ready(process: _Process, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        if not process.running:
            code = process.popen.returncode if process.popen else None
            raise process.failure(f"exited with code {code} while starting")
        if check():
            return
        if time.monotonic() > deadline:
            raise process.failure(f"not ready after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


# --- the cluster ------------------------------------------------------------


class Cluster:
    """etcd + kube-apiserver + kube-controller-manager on loopback, or an existing cluster.

    ``start()`` returns once the API server answers ``/readyz`` and the
    controller manager ``/healthz``; ``stop()`` ends the processes (SIGTERM,
    then SIGKILL) and removes the temporary directory (kept, with the logs, if
    ``EDGE_K8S_KEEP_DIR=1``). ``stop_apiserver()``/``start_apiserver()``
    restart only the API server, on the same port and with the same etcd data.
    """

    def __init__(self, *, bin_dir: Path | None = None, start_timeout: float = 120.0) -> None:
        self._bin_dir = bin_dir
        self._start_timeout = start_timeout
        self.existing = os.environ.get("EDGE_USE_EXISTING_CLUSTER") == "1" and bool(
            os.environ.get("KUBECONFIG")
        )
        self._dir: Path | None = None
        self._kubeconfig: Path | None = None
        self._kubectl: str | None = None
        self._pki: _Pki | None = None
        self._apiserver_port = 0
        self._processes: dict[str, _Process] = {}
        self._audit_log: Path | None = None

    # -- public properties ---------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (for an existing cluster: the first KUBECONFIG file)."""
        if self._kubeconfig is None:
            raise ClusterError("cluster not started")
        return self._kubeconfig

    @property
    def server(self) -> str:
        """The API server URL (only for a cluster started here)."""
        if self.existing or not self._apiserver_port:
            raise ClusterError("the server URL is known only for a cluster started here")
        return f"https://127.0.0.1:{self._apiserver_port}"

    @property
    def log_dir(self) -> Path:
        """Where etcd.log, kube-apiserver.log and kube-controller-manager.log are."""
        if self._dir is None:
            raise ClusterError("no local processes (not started, or an existing cluster)")
        return self._dir

    @property
    def audit_log(self) -> Path | None:
        """The API server's audit log (JSON lines, one per request of a service account;
        see AUDIT_POLICY), or None for an existing cluster."""
        return self._audit_log

    @property
    def bin_dir(self) -> Path:
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir()
        return self._bin_dir

    def env(self) -> dict[str, str]:
        """os.environ plus KUBECONFIG for this cluster and the binaries on PATH."""
        env = dict(os.environ)
        if not self.existing:  # an existing cluster keeps KUBECONFIG as given
            env["KUBECONFIG"] = str(self.kubeconfig)
        if self._kubectl:
            env["PATH"] = f"{Path(self._kubectl).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def kubectl(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run kubectl against this cluster; raise KubectlError (with stderr) if check fails."""
        if self._kubectl is None:
            raise ClusterError("cluster not started")
        argv = [self._kubectl, *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, argv, result.stdout, result.stderr)
        return result

    # -- lifecycle -----------------------------------------------------------

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> Self:
        if self.existing:
            self._kubeconfig = Path(os.environ["KUBECONFIG"].split(os.pathsep)[0])
            self._kubectl = self._existing_kubectl()
            return self
        if self._dir is not None:
            raise ClusterError("cluster already started")
        bin_dir = self.bin_dir
        self._kubectl = str(bin_dir / "kubectl")
        self._dir = Path(tempfile.mkdtemp(prefix="edge-k8s-"))
        atexit.register(self.stop)
        try:
            self._start_processes(bin_dir, self._dir)
        except BaseException:
            self.stop(keep_dir=True)  # the logs named in the error stay readable
            raise
        return self

    def stop(self, *, keep_dir: bool = False) -> None:
        if self.existing or self._dir is None:
            return
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            process = self._processes.pop(name, None)
            if process is not None:
                process.stop(APISERVER_STOP_GRACE if name == "kube-apiserver" else 15.0)
        atexit.unregister(self.stop)
        if not keep_dir and os.environ.get("EDGE_K8S_KEEP_DIR") != "1":
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir = None

    def stop_apiserver(self, grace: float = APISERVER_STOP_GRACE) -> None:
        """Stop only kube-apiserver (etcd and the controller manager keep running).

        SIGTERM, then SIGKILL after ``grace`` seconds: while clients hold watches
        its graceful shutdown waits up to --request-timeout (60s) for them.
        ``grace=0`` kills it at once, like a crash.
        """
        self._local("kube-apiserver").stop(grace)

    def start_apiserver(self) -> None:
        """Start kube-apiserver again on the same port and wait for /readyz."""
        process = self._local("kube-apiserver")
        if process.running:
            raise ClusterError("kube-apiserver is already running")
        process.start()
        _wait_ready(process, self._apiserver_ready, self._start_timeout)

    @property
    def apiserver_running(self) -> bool:
        return self._local("kube-apiserver").running

    # -- internals -----------------------------------------------------------

    def _local(self, name: str) -> _Process:
        if self.existing:
            raise ClusterError(f"cannot control {name} of an existing cluster")
        try:
            return self._processes[name]
        except KeyError:
            raise ClusterError("cluster not started") from None

    def _existing_kubectl(self) -> str:
        configured = os.environ.get("EDGE_K8S_BIN_DIR")
        if configured and os.access(Path(configured) / "kubectl", os.X_OK):
            return str(Path(configured) / "kubectl")
        on_path = shutil.which("kubectl")
        return on_path if on_path else str(self.bin_dir / "kubectl")

    def _apiserver_ready(self) -> bool:
        assert self._pki is not None
        context = ssl.create_default_context(cafile=str(self._pki.ca_cert))
        context.load_cert_chain(str(self._pki.admin_cert), str(self._pki.admin_key))
        return _http_ok(f"{self.server}/readyz", context)

    def _start_processes(self, bin_dir: Path, work: Path) -> None:
        pki = self._pki = _write_pki(work / "pki")
        etcd_port, peer_port, api_port, kcm_port = _free_ports(4)
        self._apiserver_port = api_port
        kubeconfig = self._kubeconfig = work / "admin.kubeconfig"
        kubeconfig.write_text(_kubeconfig(self.server, pki))
        kubeconfig.chmod(0o600)
        audit_policy = work / "audit-policy.yaml"
        audit_policy.write_text(AUDIT_POLICY)
        self._audit_log = work / "audit.log"
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"

        etcd = _Process(
            "etcd",
            [
                str(bin_dir / "etcd"),
                "--name=default",
                f"--data-dir={work / 'etcd'}",
                f"--listen-client-urls={etcd_url}",
                f"--advertise-client-urls={etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            work / "etcd.log",
        )
        apiserver = _Process(
            "kube-apiserver",
            [
                str(bin_dir / "kube-apiserver"),
                "--advertise-address=127.0.0.1",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                f"--cert-dir={work / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--etcd-servers={etcd_url}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
                "--authorization-mode=RBAC",
                "--allow-privileged=true",
                # As envtest: pods need no token controller round trip to be admitted.
                "--disable-admission-plugins=ServiceAccount",
                # 127.0.0.1 may not be an Endpoints address; no kubelets need it anyway.
                "--endpoint-reconciler-type=none",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self._audit_log}",
                "--audit-log-format=json",
                "--audit-log-mode=blocking",  # written before the response is sent
            ],
            work / "kube-apiserver.log",
        )
        kcm = _Process(
            "kube-controller-manager",
            [
                str(bin_dir / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--controllers=*",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                f"--cert-dir={work / 'kcm-certs'}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--root-ca-file={pki.ca_cert}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            ],
            work / "kube-controller-manager.log",
        )
        self._processes = {p.name: p for p in (etcd, apiserver, kcm)}

        etcd.start()
        _wait_ready(etcd, lambda: _http_ok(f"{etcd_url}/health", None), self._start_timeout)
        apiserver.start()
        _wait_ready(apiserver, self._apiserver_ready, self._start_timeout)
        kcm.start()
        insecure = ssl.create_default_context()
        insecure.check_hostname = False  # its own self-signed serving cert, on loopback
        insecure.verify_mode = ssl.CERT_NONE
        _wait_ready(
            kcm,
            lambda: _http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure),
            self._start_timeout,
        )


def wait_until(
    check: Callable[[], T],
    *,
    timeout: float = 30.0,
    interval: float = 0.2,
    what: str = "",
) -> T:
    """Poll ``check`` until it returns a truthy value (returned) or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what or check}")
        time.sleep(interval)


__all__ = [
    "BINARIES",
    "Cluster",
    "ClusterError",
    "KubectlError",
    "find_bin_dir",
    "log_tail",
    "pinned_version",
    "wait_until",
]
