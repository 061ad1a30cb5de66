"""Kubernetes access for both planes, on lightkube (async, typed, server-side apply).

Sits in the shared package: the runner (``edge_runner.sources.cluster`` and
``.registration``) and the operator (``edge_operator``) build their clients
with :func:`async_client`.  What lightkube does not do the way kubectl does is
added here, and only that:

* :func:`load_config` -- in-cluster service account when ``KUBECONFIG`` is not
  set and a token is mounted; otherwise every file of ``KUBECONFIG`` merged the
  way kubectl merges them (:func:`merge_kubeconfigs`), else ``~/.kube/config``.
  Exec credential plugins (EKS, GKE, AKS) are run by lightkube and get
  ``KUBERNETES_EXEC_INFO`` (non-interactive) as kubectl passes it.
* :class:`RetryAfterTransport` -- a 429 or 5xx answer with ``Retry-After`` is
  retried after that many seconds, as client-go does.
* :func:`authorization` -- the ``Authorization`` header the config yields
  (token, token file, exec plugin), for kopf's own client (its login handler).

Inline certificate data never stays on disk: lightkube writes it to
self-deleting temporary files only while the TLS context is built.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import httpx2
import yaml
from lightkube import ApiError, AsyncClient, ConfigError, KubeConfig, SingleConfig
from lightkube.config.client_adapter import user_auth, verify_cluster
from lightkube.config.models import Cluster, User
from lightkube.generic_resource import create_namespaced_resource

from edge_api.constants import (
    GROUP,
    KIND_FUNCTION,
    KIND_ROUTE,
    PLURAL_FUNCTION,
    PLURAL_ROUTE,
    VERSION,
)

SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG: Final = "~/.kube/config"
#: Retries of one request the API server asked to repeat later (client-go: 10).
MAX_RETRIES: Final = 10
#: Longest wait honoured from one ``Retry-After`` (seconds).
MAX_RETRY_AFTER: Final = 60.0

#: The custom resources, as lightkube generic resources (objects are dicts).
EdgeFunctionResource: Final = create_namespaced_resource(
    GROUP, VERSION, KIND_FUNCTION, PLURAL_FUNCTION)
EdgeRouteResource: Final = create_namespaced_resource(GROUP, VERSION, KIND_ROUTE, PLURAL_ROUTE)

#: What a failed API call can raise: an answer >= 400 (``ApiError`` is one),
#: a transport error, or an OS error (e.g. an exec plugin that cannot start).
KUBE_ERRORS: Final[tuple[type[BaseException], ...]] = (httpx2.HTTPError, OSError, ConfigError)

_EXEC_V1 = "client.authentication.k8s.io/v1"
_EXEC_V1BETA1 = "client.authentication.k8s.io/v1beta1"
#: Keys of a kubeconfig that name files, relative to the file they are in.
_CLUSTER_FILES = ("certificate-authority",)
_USER_FILES = ("client-certificate", "client-key", "tokenFile")


def status_code(exc: BaseException) -> int | None:
    """The HTTP status of a failed API call (also for watch ``ERROR`` events), else None."""
    if isinstance(exc, ApiError) and exc.status is not None and exc.status.code:
        return int(exc.status.code)
    if isinstance(exc, httpx2.HTTPStatusError):
        response: Any = exc.response  # None in an ApiError built from a watch event
        if isinstance(response, httpx2.Response):
            return response.status_code
    return None


def is_not_found(exc: BaseException) -> bool:
    return status_code(exc) == 404


# -- configuration --------------------------------------------------------------------------


def kubeconfig_paths(value: str) -> list[Path]:
    """The files of a ``KUBECONFIG`` value: ``os.pathsep``-separated, empty entries skipped."""
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def _absolute(base: Path, value: Any) -> Any:
    if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        return str(base / value)
    return value


def _resolved(kind: str, entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """A cluster or user entry with its file references made absolute (as kubectl does)."""
    body = dict(entry)
    for key in _CLUSTER_FILES if kind == "clusters" else _USER_FILES:
        if key in body:
            body[key] = _absolute(base, body[key])
    exec_entry = body.get("exec")
    if kind == "users" and isinstance(exec_entry, Mapping):
        body["exec"] = _exec_entry(exec_entry, base)
    return body


def _exec_entry(entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """An exec plugin as kubectl runs it: a relative command containing a slash is
    relative to the kubeconfig, and the plugin gets ``KUBERNETES_EXEC_INFO``.

    lightkube 1.0 accepts only the v1alpha1/v1beta1 ``apiVersion`` names; the
    ``ExecCredential`` a token plugin prints (``status.token``) is the same in
    v1, so a v1 entry is run under the v1beta1 name.
    """
    body = dict(entry)
    command = body.get("command")
    if isinstance(command, str) and os.sep in command:
        body["command"] = _absolute(base, command)
    api_version = str(body.get("apiVersion") or _EXEC_V1BETA1)
    env = [dict(item) for item in body.get("env") or []]
    if not any(item.get("name") == "KUBERNETES_EXEC_INFO" for item in env):
        info = {"apiVersion": api_version, "kind": "ExecCredential",
                "spec": {"interactive": False}}
        env.append({"name": "KUBERNETES_EXEC_INFO", "value": json.dumps(info)})
    body["env"] = env
    body["apiVersion"] = _EXEC_V1BETA1 if api_version == _EXEC_V1 else api_version
    return body


def merge_kubeconfigs(documents: Iterable[tuple[Path, Mapping[str, Any] | None]]
                      ) -> dict[str, Any]:
    """Merge kubeconfig documents in ``KUBECONFIG`` order, by kubectl's rules.

    The first file to define a cluster, user or context name wins, and so does
    the first file that sets ``current-context``; relative file references are
    resolved against the file that holds them.  Pure: ``documents`` are
    ``(path, parsed YAML)`` pairs.
    """
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    seen: dict[str, set[str]] = {kind: set() for kind in merged}
    singular = {"clusters": "cluster", "users": "user", "contexts": "context"}
    for path, parsed in documents:
        document = parsed or {}
        base = path.parent
        if not merged.get("current-context") and document.get("current-context"):
            merged["current-context"] = document["current-context"]
        for kind, key in singular.items():
            for item in document.get(kind) or []:
                name = item.get("name")
                if not isinstance(name, str) or name in seen[kind]:
                    continue
                seen[kind].add(name)
                entry = item.get(key) or {}
                if kind != "contexts":
                    entry = _resolved(kind, entry, base)
                merged[kind].append({"name": name, key: entry})
    return merged


def load_config(kubeconfig: str | None = None, *, context: str | None = None) -> SingleConfig:
    """The cluster to talk to, chosen as kubectl and controllers do.

    ``kubeconfig`` (a ``KUBECONFIG``-style list) or the ``KUBECONFIG`` variable
    wins; without either, the pod's service account if one is mounted, else
    ``~/.kube/config``.  Files of the list that do not exist are skipped; none
    existing is an error.  ``context`` defaults to the current context, else
    the first one.
    """
    listing = kubeconfig or os.environ.get("KUBECONFIG") or ""
    if not listing and (SERVICE_ACCOUNT_DIR / "token").exists():
        return in_cluster_config()
    paths = [p for p in kubeconfig_paths(listing or DEFAULT_KUBECONFIG) if p.is_file()]
    if not paths:
        raise ConfigError(f"no kubeconfig file found in {listing or DEFAULT_KUBECONFIG!r}"
                          " and not running in a pod")
    documents = [(path, yaml.safe_load(path.read_text())) for path in paths]
    merged = merge_kubeconfigs(documents)
    if not merged["contexts"]:
        raise ConfigError(f"no context in {os.pathsep.join(map(str, paths))}")
    if not context and not merged.get("current-context"):
        merged["current-context"] = merged["contexts"][0]["name"]  # docs/cli.md: or the first
    single = KubeConfig.from_dict(merged, fname=paths[0]).get(context)
    if single is None:  # pragma: no cover - get() raises instead
        raise ConfigError("no current context")
    # A context without a user is allowed by kubectl (no credentials).
    return single if single.user is not None else single._replace(user=User())


def in_cluster_config(account: Path = SERVICE_ACCOUNT_DIR) -> SingleConfig:
    """The pod's service account: its token file (re-read when rotated), CA and namespace."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    namespace_file = account / "namespace"
    single = KubeConfig.from_one(
        cluster=Cluster(server=server, certificate_auth=str(account / "ca.crt")),
        user=User(token_file=str(account / "token")),
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else None,
    ).get()
    assert single is not None
    return single


def ssl_context(config: SingleConfig) -> ssl.SSLContext:
    """Server verification and client certificate of ``config`` (lightkube's rules)."""
    return verify_cluster(config.cluster, config.user or User(), config.abs_file)


async def authorization(config: SingleConfig) -> str | None:
    """The ``Authorization`` header ``config`` yields now (runs an exec plugin if it has one)."""
    auth = user_auth(config.user or User())
    if auth is None:
        return None
    flow = auth.async_auth_flow(httpx2.Request("GET", config.cluster.server))
    try:
        request = await flow.__anext__()
    finally:
        await flow.aclose()
    value = request.headers.get("Authorization")
    return str(value) if value else None


# -- the client -----------------------------------------------------------------------------


def retry_after(status: int, header: str | None) -> float | None:
    """Seconds to wait before repeating a request that got ``status``, or None (don't).

    client-go's rule: a 429 or a 5xx answer that carries ``Retry-After`` in
    whole seconds; capped at :data:`MAX_RETRY_AFTER`.
    """
    if status != 429 and not 500 <= status <= 599:
        return None
    if header is None:
        return None
    try:
        seconds = int(header.strip())
    except ValueError:
        return None
    return float(min(max(seconds, 0), MAX_RETRY_AFTER))


class RetryAfterTransport(httpx2.AsyncBaseTransport):
    """Repeats a request the API server asked to repeat later (see :func:`retry_after`).

    Such an answer means the request was not processed (priority and fairness
    throttling, a server shutting down), so any verb is repeated, at most
    ``max_retries`` times; the last answer is returned as it is.
    """

    def __init__(self, inner: httpx2.AsyncBaseTransport, *, max_retries: int = MAX_RETRIES,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.inner = inner
        self.max_retries = max_retries
        self._sleep = sleep

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        attempt = 0
        while True:
            response = await self.inner.handle_async_request(request)
            delay = retry_after(response.status_code, response.headers.get("Retry-After"))
            if delay is None or attempt >= self.max_retries:
                return response
            attempt += 1
            await response.aclose()
            await self._sleep(delay)

    async def aclose(self) -> None:
        await self.inner.aclose()


def async_client(config: SingleConfig | None = None, *, field_manager: str,
                 namespace: str | None = None, timeout: float = 30.0) -> AsyncClient:
    """A lightkube client for ``config`` (default: :func:`load_config`).

    ``field_manager`` names the writer in server-side apply and in
    ``managedFields`` of everything this client writes.
    """
    config = config or load_config()
    transport = RetryAfterTransport(httpx2.AsyncHTTPTransport(verify=ssl_context(config)))
    return AsyncClient(config, namespace=namespace, field_manager=field_manager,
                       timeout=httpx2.Timeout(timeout), transport=transport, lazy=False)


__all__ = [
    "KUBE_ERRORS",
    "EdgeFunctionResource",
    "EdgeRouteResource",
    "RetryAfterTransport",
    "async_client",
    "authorization",
    "in_cluster_config",
    "is_not_found",
    "kubeconfig_paths",
    "load_config",
    "merge_kubeconfigs",
    "retry_after",
    "ssl_context",
    "status_code",
]
