"""Resolve an EdgeFunction's ``spec.source`` into a module (operator side).

``inline`` is decoded, ``configMapRef`` read from the function's namespace,
``url`` downloaded through :func:`edge_api.fetch.fetch_bounded` (address policy,
byte cap, deadline) and its sha256 checked, ``oci`` resolved with
:mod:`edge_api.oci` (a tag to a manifest digest on every reconcile, so a moved
tag rolls out) and its blob fetched only when its validation is not known yet.
Modules larger than a ConfigMap carries (and every ``oci`` one) come back with
an :class:`~edge_api.artifacts.ArtifactRef` the runners fetch by digest
(docs/artifacts.md).  ``path`` exists only for standalone runners and is refused
with a reason the reconciler turns into a condition.

    SourceError(reason, message, transient)  -- transient ones are retried
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Secret

from edge_api.artifacts import MAX_INLINE_BYTES, ArtifactRef
from edge_api.errors import ReasonedError
from edge_api.fetch import FetchError, fetch_bounded, parse_networks
from edge_api.k8s import KUBE_ERRORS, is_not_found
from edge_api.models import OciSource, Source
from edge_api.oci import OciError, client_for, dockerconfig_of
from edge_operator.config import OperatorConfig


class SourceError(ReasonedError):
    """A source that could not be resolved; ``reason`` becomes the function's condition."""


@dataclass(frozen=True)
class Resolved:
    """A resolved source: the module (None: not fetched, its validation is known), its
    ``sha256:`` digest and size, and the reference runners fetch it by, if any."""

    wasm: bytes | None
    digest: str
    size: int
    artifact: ArtifactRef | None = None
    #: What ``status.artifact`` shows for an oci source (``repo@sha256:<manifest>``).
    pinned: str | None = None


def _digest(wasm: bytes) -> str:
    return f"sha256:{hashlib.sha256(wasm).hexdigest()}"


async def resolve(source: Source, *, namespace: str, kube: AsyncClient,
                  config: OperatorConfig, known: Callable[[str], bool] = lambda _: False,
                  ) -> Resolved:
    """The module ``source`` names; ``known(digest)``: its validation result is cached."""
    if source.inline is not None:
        wasm = source.inline_bytes()
        return Resolved(wasm, _digest(wasm), len(wasm))
    if source.config_map_ref is not None:
        ref = source.config_map_ref
        wasm = await _from_configmap(ref.name, ref.key, namespace=namespace, kube=kube)
        return _by_size(wasm, config, ArtifactRef("configMap", ref.name, _digest(wasm),
                                                  len(wasm), key=ref.key))
    if source.url is not None:
        wasm = await _from_url(source.url.url, source.url.sha256, config)
        return _by_size(wasm, config, ArtifactRef(
            "url", source.url.url, _digest(wasm), len(wasm),
            allow=tuple(config.allow_fetch_from)))
    if source.oci is not None:
        return await _from_oci(source.oci, namespace=namespace, kube=kube, config=config,
                               known=known)
    raise SourceError(
        "PathNotSupported",
        "source.path is for standalone runners only; in a cluster use inline,"
        " configMapRef, url or oci",
    )


def _by_size(wasm: bytes, config: OperatorConfig, artifact: ArtifactRef) -> Resolved:
    if len(wasm) > config.max_module_bytes:
        raise SourceError("ModuleTooLarge", f"module of {len(wasm)} bytes is over the limit"
                          f" of {config.max_module_bytes} bytes")
    return Resolved(wasm, artifact.digest, len(wasm),
                    artifact if len(wasm) > MAX_INLINE_BYTES else None)


async def _pull_secret(oci: OciSource, namespace: str, kube: AsyncClient) -> bytes | None:
    if oci.pull_secret_ref is None:
        return None
    name = oci.pull_secret_ref.name
    try:
        secret = await kube.get(Secret, name, namespace=namespace)
    except KUBE_ERRORS as exc:
        reason = "PullSecretNotFound" if is_not_found(exc) else "PullSecretUnreadable"
        raise SourceError(reason, f"secret {name} in {namespace}: {exc}", transient=True
                          ) from exc
    try:
        return dockerconfig_of(secret.to_dict(), name)
    except OciError as exc:
        raise SourceError(exc.reason, exc.message) from exc


async def _from_oci(oci: OciSource, *, namespace: str, kube: AsyncClient,
                    config: OperatorConfig, known: Callable[[str], bool]) -> Resolved:
    dockerconfig = await _pull_secret(oci, namespace, kube)
    try:
        client = client_for(oci.ref, dockerconfig=dockerconfig,
                            allow=parse_networks(config.allow_fetch_from),
                            insecure=config.insecure_registries,
                            deadline=config.fetch_deadline)
        artifact = await client.resolve(max_bytes=config.max_module_bytes)
        wasm = None if known(artifact.layer_digest) else \
            await client.blob(artifact.layer_digest, size=artifact.layer_size)
    except OciError as exc:
        raise SourceError(exc.reason, exc.message, transient=exc.transient) from exc
    pinned = artifact.reference.pinned(artifact.manifest_digest)
    reference = ArtifactRef(
        "oci", pinned, artifact.layer_digest, artifact.layer_size,
        pull_secret=oci.pull_secret_ref.name if oci.pull_secret_ref else "",
        allow=tuple(config.allow_fetch_from), insecure=tuple(config.insecure_registries))
    return Resolved(wasm, artifact.layer_digest, artifact.layer_size, reference, pinned)


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
    try:
        response = await fetch_bounded(url, max_bytes=config.max_module_bytes,
                                       deadline=config.fetch_deadline,
                                       allow=parse_networks(config.allow_fetch_from),
                                       idle=config.url_timeout)
    except FetchError as exc:
        if exc.reason == "TooLarge":
            raise SourceError("ModuleTooLarge", f"{url} is larger than"
                              f" {config.max_module_bytes} bytes") from exc
        if exc.transient:
            raise SourceError("FetchFailed", exc.message, transient=True) from exc
        raise SourceError(exc.reason, exc.message) from exc
    if response.status != 200:
        raise SourceError("FetchFailed", f"GET {url}: HTTP {response.status}", transient=True)
    actual = await asyncio.to_thread(lambda: hashlib.sha256(response.body).hexdigest())
    if actual != sha256:
        raise SourceError("DigestMismatch", f"{url} has sha256 {actual}, expected {sha256}")
    return response.body
