"""A real OCI registry for the ``source.oci`` tests: Debian's ``docker-registry``.

:class:`Registry` runs ``/usr/bin/docker-registry`` (the CNCF distribution
registry) as a child process on loopback with a config file written here:
anonymous over plain HTTP, or TLS with a certificate from a :class:`LocalCA`
made in the test (``cryptography``), with htpasswd users (bcrypt entries) or
bearer tokens from a :class:`support.registry_tokens.TokenServer`.  :func:`oras` finds the
``oras`` client built by tests/oras-bin/build.sh; :meth:`Registry.push` pushes
a module with it, as a plain ``oras push`` artifact or in the CNCF Wasm layout,
and returns the manifest digest.  Ready when ``GET /v2/`` answers (polled with
a deadline).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Self

import bcrypt
import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from support.runner import REPO_ROOT, free_port, wait_until

REGISTRY_BIN = Path("/usr/bin/docker-registry")
WASM_CONFIG = "application/vnd.wasm.config.v0+json"


@lru_cache(maxsize=1)
def oras() -> Path:
    """The oras binary (built and cached by tests/oras-bin/build.sh)."""
    out = subprocess.run([str(REPO_ROOT / "tests/oras-bin/build.sh")], check=True,
                         capture_output=True, text=True).stdout
    return Path(out.strip().splitlines()[-1])


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass(frozen=True)
class LocalCA:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost, as PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def make(cls, folder: Path) -> LocalCA:
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (x509.CertificateBuilder().subject_name(_name("edge-test-ca"))
              .issuer_name(_name("edge-test-ca")).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                           False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1"))
                .issuer_name(ca.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        made = cls(folder / "ca.pem", folder / "server.pem", folder / "server.key")
        made.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        made.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        made.key_file.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        return made


class Registry:
    """One docker-registry process; ``host`` is ``127.0.0.1:<port>``."""

    def __init__(self, folder: Path, *, ca: LocalCA | None = None,
                 users: dict[str, str] | None = None, token: dict[str, str] | None = None,
                 port: int | None = None) -> None:
        self.folder = folder
        self.ca = ca
        self.users = users or {}
        self.token = token
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}"

    def _config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        http: dict[str, object] = {"addr": self.host, "secret": "edge-test"}
        if self.ca is not None:
            http["tls"] = {"certificate": str(self.ca.cert_file), "key": str(self.ca.key_file)}
        config: dict[str, object] = {
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.folder / "data")}},
            "http": http,
        }
        if self.users:
            htpasswd = self.folder / "htpasswd"
            htpasswd.write_text("".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                for user, password in self.users.items()))
            config["auth"] = {"htpasswd": {"realm": "edge-test", "path": str(htpasswd)}}
        elif self.token is not None:
            config["auth"] = {"token": self.token}
        path = self.folder / "config.yml"
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    def start(self) -> Self:
        config = self._config()
        with open(self.folder / "registry.log", "ab") as log:
            self.process = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)],
                                            stdout=subprocess.DEVNULL, stderr=log)
        verify: ssl.SSLContext | bool = \
            ssl.create_default_context(cafile=str(self.ca.ca_file)) if self.ca else False
        try:
            wait_until(lambda: httpx.get(f"{self.url}/v2/", verify=verify).status_code
                       in (200, 401), timeout=20, what=f"registry on {self.host}")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def push(self, repo_tag: str, wasm: bytes, *, cncf: bool = False,
             user: tuple[str, str] | None = None, media_type: str = "application/wasm") -> str:
        """Push ``wasm`` as ``<host>/<repo_tag>`` with oras; returns the manifest digest."""
        work = self.folder / "push"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        (work / "module.wasm").write_bytes(wasm)
        command = [str(oras()), "push", "--format", "json", "--no-tty"]
        if cncf:
            (work / "config.json").write_text(json.dumps({
                "created": "2026-01-01T00:00:00Z", "architecture": "wasm",
                "os": "wasip1", "layerDigests": []}))
            command += ["--config", f"config.json:{WASM_CONFIG}"]
        command += ["--plain-http"] if self.ca is None else ["--ca-file", str(self.ca.ca_file)]
        if user is not None:
            command += ["-u", user[0], "-p", user[1]]
        command += [f"{self.host}/{repo_tag}", f"module.wasm:{media_type}"]
        done = subprocess.run(command, check=False, cwd=work, capture_output=True, text=True,
                              timeout=120,
                              env={"HOME": str(work), "PATH": "/usr/bin:/bin"})
        if done.returncode != 0:
            raise RuntimeError(f"oras push failed: {done.stderr}")
        return str(json.loads(done.stdout)["digest"])
