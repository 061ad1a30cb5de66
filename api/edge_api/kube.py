"""A small async Kubernetes REST client (httpx), shared by the runner and the operator.

Only what edge-runner needs: typed JSON requests (get, list, create, replace,
merge/JSON patch, delete) and a watch stream, authenticated from in-cluster
service-account files or a kubeconfig (client certificates, bearer tokens,
CA data or files).  kopf keeps its own client for its watches; this one is used
by the runner's ConfigMap watcher and registration, and by operator logic that
reads and writes objects besides the one being handled.

    KubeError                   any failed request (status, reason, message)
    └── NotFound / Conflict     404 / 409, the two callers branch on
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

JsonObject = dict[str, Any]


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


@dataclass(frozen=True)
class KubeConfig:
    server: str
    ssl_context: ssl.SSLContext | bool
    token_file: Path | None = None
    token: str | None = None
    namespace: str = "default"
    #: PEM files as given or written out from inline data (kopf needs these).
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def bearer(self) -> str | None:
        if self.token_file is not None:
            return self.token_file.read_text().strip()
        return self.token


def _write_private(data: bytes, suffix: str) -> str:
    handle, path = tempfile.mkstemp(prefix="edge-kube-", suffix=suffix)
    with os.fdopen(handle, "wb") as out:
        out.write(data)
    return path


def _material(entry: dict[str, Any], key: str, base: Path) -> str | None:
    """Path of a PEM given as ``key`` (a file) or ``key-data`` (base64 inline)."""
    if entry.get(f"{key}-data"):
        return _write_private(base64.b64decode(entry[f"{key}-data"]), ".pem")
    if entry.get(key):
        return str((base / entry[key]).resolve())
    return None


def load_config(kubeconfig: str | None = None) -> KubeConfig:
    """In-cluster config when running in a pod, else the (first) KUBECONFIG file."""
    path_text = kubeconfig or os.environ.get("KUBECONFIG")
    if not path_text and (SERVICE_ACCOUNT_DIR / "token").exists():
        host = os.environ["KUBERNETES_SERVICE_HOST"]
        port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
        context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
        namespace_file = SERVICE_ACCOUNT_DIR / "namespace"
        return KubeConfig(
            server=f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}",
            ssl_context=context,
            ca_file=str(SERVICE_ACCOUNT_DIR / "ca.crt"),
            token_file=SERVICE_ACCOUNT_DIR / "token",
            namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
        )
    path = Path(path_text.split(os.pathsep)[0] if path_text else "~/.kube/config").expanduser()
    document = yaml.safe_load(path.read_text())
    current = document.get("current-context")
    contexts = {c["name"]: c["context"] for c in document.get("contexts", [])}
    context_entry = contexts.get(current) or next(iter(contexts.values()))
    clusters = {c["name"]: c["cluster"] for c in document.get("clusters", [])}
    users = {u["name"]: u.get("user", {}) for u in document.get("users", [])}
    cluster = clusters[context_entry["cluster"]]
    user = users.get(context_entry.get("user", ""), {})
    base = path.parent
    verify: ssl.SSLContext | bool
    insecure = bool(cluster.get("insecure-skip-tls-verify"))
    ca_file = None if insecure else _material(cluster, "certificate-authority", base)
    cert = _material(user, "client-certificate", base)
    key = _material(user, "client-key", base)
    if insecure:
        verify = False
    else:
        verify = ssl.create_default_context(cafile=ca_file)
        if cert and key:
            verify.load_cert_chain(cert, key)
    token_file = Path(user["tokenFile"]) if user.get("tokenFile") else None
    return KubeConfig(
        server=cluster["server"].rstrip("/"),
        ssl_context=verify,
        token=user.get("token"),
        token_file=token_file,
        namespace=context_entry.get("namespace", "default"),
        ca_file=ca_file,
        cert_file=cert,
        key_file=key,
        insecure=insecure,
    )


def resource_path(  # noqa: PLR0917 - reads like the URL it builds
    group: str, version: str, plural: str, namespace: str | None, name: str | None = None,
    subresource: str | None = None,
) -> str:
    """``/api/v1/...`` for the core group, ``/apis/<group>/<version>/...`` otherwise."""
    parts = ["/api", version] if not group else ["/apis", group, version]
    if namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    if subresource is not None:
        parts.append(subresource)
    return "/".join(parts)


class KubeClient:
    """One HTTP/1.1 connection pool to the API server."""

    def __init__(self, config: KubeConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self._http = httpx.AsyncClient(
            base_url=config.server, verify=config.ssl_context, timeout=timeout
        )

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        headers = {"accept": "application/json"}
        token = self.config.bearer()
        if token:
            headers["authorization"] = f"Bearer {token}"
        if content_type:
            headers["content-type"] = content_type
        return headers

    async def request(
        self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JsonObject:
        response = await self._http.request(
            method, path, params=params, headers=self._headers(content_type if body else None),
            content=json.dumps(body).encode() if body is not None else None,
        )
        if response.status_code >= 400:
            raise _error(response.status_code, response.content)
        result: JsonObject = response.json()
        return result

    async def get(self, path: str) -> JsonObject:
        return await self.request("GET", path)

    async def list(self, path: str, *, label_selector: str | None = None) -> JsonObject:
        params = {"labelSelector": label_selector} if label_selector else None
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request("POST", path, body=body)

    async def replace(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request("PUT", path, body=body)

    async def merge_patch(self, path: str, body: JsonObject) -> JsonObject:
        return await self.request(
            "PATCH", path, body=body, content_type="application/merge-patch+json"
        )

    async def delete(self, path: str) -> JsonObject:
        return await self.request("DELETE", path)

    async def watch(
        self, path: str, *, resource_version: str, label_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[JsonObject]:
        """Yield watch events (``{"type": ..., "object": ...}``) until the server ends it."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(timeout_seconds),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        async with self._http.stream(
            "GET", path, params=params, headers=self._headers(),
            timeout=httpx.Timeout(10.0, read=timeout_seconds + 30.0),
        ) as response:
            if response.status_code >= 400:
                raise _error(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if line.strip():
                    yield json.loads(line)


def _error(status: int, content: bytes) -> KubeError:
    try:
        payload = json.loads(content)
        reason, message = str(payload.get("reason", "")), str(payload.get("message", ""))
    except ValueError:
        reason, message = "", content[:200].decode(errors="replace")
    if status == 404:
        return NotFound(status, reason or "NotFound", message)
    if status == 409:
        return Conflict(status, reason or "Conflict", message)
    return KubeError(status, reason, message)
