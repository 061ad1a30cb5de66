"""Modules the operator published by reference: fetched once per digest, kept on disk.

:mod:`edge_runner.sources.cluster` asks :meth:`Artifacts.module` for the bytes of
a function ConfigMap's :class:`~edge_api.artifacts.ArtifactRef` (docs/artifacts.md).
The answer is the module if this runner has it (memory, then the
:class:`~edge_runner.wasm.blobs.BlobStore` on disk), else a message: one
background task per digest (shared by every function and every apply that
needs it) fetches it from the same source the operator read (a registry blob
by digest, the url, the user's ConfigMap), checks size and sha256, stores it
and sets :attr:`Artifacts.changed` so the catalog is applied again.  Failures
are retried with capped backoff; meanwhile the version already loaded keeps
serving.  Pull credentials: the runner reads the ``kubernetes.io/dockerconfigjson``
Secret the reference names, itself, at fetch time; no secret value is ever
written into a ConfigMap.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final

from lightkube import AsyncClient
from lightkube.resources.core_v1 import ConfigMap, Secret

from edge_api.artifacts import ArtifactRef
from edge_api.fetch import FetchError, fetch_bounded, parse_networks
from edge_api.k8s import KUBE_ERRORS
from edge_api.oci import OciError, client_for, dockerconfig_of
from edge_runner.metrics import RunnerMetrics
from edge_runner.wasm.blobs import BlobStore

log = logging.getLogger("edge_runner.sources.artifacts")

#: Seconds one fetch may take in all (a 64 MiB module on a slow link).
FETCH_DEADLINE: Final = 300.0
FIRST_BACKOFF: Final = 1.0
MAX_BACKOFF: Final = 60.0


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactUnavailable(Exception):
    """A fetch that failed; the message says why (never a body or a hash of one)."""


class Artifacts:
    def __init__(self, *, kube: AsyncClient, namespace: str, store: BlobStore,
                 metrics: RunnerMetrics | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.store = store
        self.metrics = metrics
        #: Set when a fetch finished or failed: the desired state should be applied again.
        self.changed = asyncio.Event()
        self._have: dict[str, bytes] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._errors: dict[str, str] = {}

    def module(self, ref: ArtifactRef) -> bytes | str:
        """The module ``ref`` names, or why it is not here yet (a fetch is under way)."""
        data = self._have.get(ref.digest)
        if data is not None:
            return data
        task = self._tasks.get(ref.digest)
        if task is None or task.done():
            self._tasks[ref.digest] = asyncio.create_task(self._fetch(ref),
                                                          name=f"fetch {ref.digest[:19]}")
        error = self._errors.get(ref.digest)
        return f"fetching {ref.kind} {ref.location}" + (f" (last try: {error})" if error else "")

    def retain(self, digests: set[str]) -> None:
        """Forget modules and stop fetches no published function needs any more."""
        for digest in set(self._have) - digests:
            del self._have[digest]
        for digest in set(self._tasks) - digests:
            self._tasks.pop(digest).cancel()
            self._errors.pop(digest, None)

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self, ref: ArtifactRef) -> None:
        backoff = FIRST_BACKOFF
        while True:
            data = await asyncio.to_thread(self.store.load, ref.digest)
            if data is not None and len(data) == ref.size:
                break
            try:
                data = await self._download(ref)
            except ArtifactUnavailable as exc:
                self._errors[ref.digest] = str(exc)
                self._count(ref.kind, "error", 0)
                log.warning("module %s from %s %s not fetched: %s; retrying in %.0fs",
                            ref.digest[:19], ref.kind, ref.location, exc, backoff)
                self.changed.set()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self._count(ref.kind, "ok", len(data))
            await asyncio.to_thread(self.store.store, ref.digest, data)
            log.info("module %s fetched from %s %s (%d bytes)", ref.digest[:19], ref.kind,
                     ref.location, len(data))
            break
        self._have[ref.digest] = data
        self._errors.pop(ref.digest, None)
        self.changed.set()

    def _count(self, kind: str, result: str, size: int) -> None:
        if self.metrics is not None:
            self.metrics.artifact_fetches.labels(kind, result).inc()
            if size:
                self.metrics.artifact_bytes.labels(kind).inc(size)

    async def _download(self, ref: ArtifactRef) -> bytes:
        try:
            if ref.kind == "oci":
                data = await self._from_registry(ref)
            elif ref.kind == "url":
                response = await fetch_bounded(ref.location, max_bytes=ref.size,
                                               deadline=FETCH_DEADLINE,
                                               allow=parse_networks(ref.allow))
                if response.status != 200:
                    raise ArtifactUnavailable(f"GET {ref.location}: HTTP {response.status}")
                data = response.body
            else:
                data = await self._from_configmap(ref)
        except (FetchError, OciError) as exc:
            raise ArtifactUnavailable(f"{exc.reason}: {exc.message}") from exc
        except KUBE_ERRORS as exc:
            raise ArtifactUnavailable(f"API server: {exc}") from exc
        if len(data) != ref.size or await asyncio.to_thread(_hex, data) != ref.digest[7:]:
            raise ArtifactUnavailable(f"{ref.location}: the bytes fetched are not {ref.digest}")
        return data

    async def _from_registry(self, ref: ArtifactRef) -> bytes:
        dockerconfig = None
        if ref.pull_secret:
            secret = await self.kube.get(Secret, ref.pull_secret, namespace=self.namespace)
            dockerconfig = dockerconfig_of(secret.to_dict(), ref.pull_secret)
        client = client_for(ref.location, dockerconfig=dockerconfig,
                            allow=parse_networks(ref.allow), insecure=ref.insecure,
                            deadline=FETCH_DEADLINE)
        return await client.blob(ref.digest, size=ref.size)

    async def _from_configmap(self, ref: ArtifactRef) -> bytes:
        found = (await self.kube.get(ConfigMap, ref.location, namespace=self.namespace)
                 ).to_dict()
        binary = (found.get("binaryData") or {}).get(ref.key)
        if binary is not None:
            return base64.b64decode(binary)
        text = (found.get("data") or {}).get(ref.key)
        if text is None:
            raise ArtifactUnavailable(f"configmap {ref.location} has no key {ref.key!r}")
        return str(text).encode()


async def follow_changes(artifacts: Artifacts, apply: Callable[[], Awaitable[object]],
                         stop: asyncio.Event) -> None:
    """Call ``apply`` after each fetch that finished or failed, until ``stop``."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(artifacts.changed.wait(), 1.0)
        if artifacts.changed.is_set():
            artifacts.changed.clear()
            await apply()
