"""Resolve an EdgeFunction's ``spec.source`` into module bytes (operator side).

``inline`` is decoded, ``configMapRef`` read from the function's namespace,
``url`` downloaded with a size limit and its sha256 checked.  ``path`` exists
only for standalone runners and ``oci`` is not supported yet: both are refused
with a reason the reconciler turns into a condition.

    SourceError(reason, message, transient)  -- transient ones are retried
"""

from __future__ import annotations

import base64
import hashlib

import httpx
from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap

from edge_api.k8s import KUBE_ERRORS, is_not_found
from edge_api.models import Source
from edge_operator.config import OperatorConfig


class SourceError(Exception):
    def __init__(self, reason: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.transient = transient


async def resolve(source: Source, *, namespace: str, kube: AsyncClient,
                  config: OperatorConfig) -> bytes:
    if source.inline is not None:
        return source.inline_bytes()
    if source.config_map_ref is not None:
        return await _from_configmap(source.config_map_ref.name, source.config_map_ref.key,
                                     namespace=namespace, kube=kube)
    if source.url is not None:
        return await _from_url(source.url.url, source.url.sha256, config)
    if source.path is not None:
        raise SourceError(
            "PathNotSupported",
            "source.path is for standalone runners only; in a cluster use inline,"
            " configMapRef or url",
        )
    raise SourceError("SourceNotSupported", "source.oci is not supported yet; use url or"
                      " configMapRef")


async def _from_configmap(name: str, key: str, *, namespace: str, kube: AsyncClient) -> bytes:
    try:
        found = await kube.get(ConfigMap, name, namespace=namespace)
    except KUBE_ERRORS as exc:
        if is_not_found(exc):
            raise SourceError("ConfigMapNotFound", f"configmap {name} not found in {namespace}",
                              transient=True) from exc
        raise SourceError("ConfigMapUnreadable", f"configmap {name}: {exc}",
                          transient=True) from exc
    configmap = found.to_dict()
    binary = (configmap.get("binaryData") or {}).get(key)
    if binary is not None:
        return base64.b64decode(binary)
    text = (configmap.get("data") or {}).get(key)
    if text is not None:
        return str(text).encode()
    raise SourceError("KeyNotFound", f"configmap {name} has no key {key!r}", transient=True)


async def _from_url(url: str, sha256: str, config: OperatorConfig) -> bytes:
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    size = 0
    try:
        async with httpx.AsyncClient(timeout=config.url_timeout, follow_redirects=True) as client, \
                client.stream("GET", url) as response:
            if response.status_code != 200:
                raise SourceError("FetchFailed", f"GET {url}: HTTP {response.status_code}",
                                  transient=True)
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > config.max_url_bytes:
                    raise SourceError(
                        "ModuleTooLarge",
                        f"{url} is larger than {config.max_url_bytes} bytes",
                    )
                digest.update(chunk)
                chunks.append(chunk)
    except httpx.HTTPError as exc:
        raise SourceError("FetchFailed", f"GET {url}: {exc}", transient=True) from exc
    if digest.hexdigest() != sha256:
        raise SourceError(
            "DigestMismatch", f"{url} has sha256 {digest.hexdigest()}, expected {sha256}"
        )
    return b"".join(chunks)
