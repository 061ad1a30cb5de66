"""Runner registration and heartbeat: this runner's Lease (cluster mode only).

Started by :func:`edge_runner.sources.cluster.watch_cluster` once the first sync is
applied.  Renews the Lease every third of its duration, and at once when the
catalog changes so the operator sees a new digest served within a second;
recreates it if it vanished (the operator cleans up expired Leases, or the API
server lost it); deletes it on shutdown.  API errors are logged and retried:
a runner keeps serving whether or not it can report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket

import httpx

from edge_api.kube import KubeClient, KubeError, NotFound, resource_path
from edge_api.runners import lease, lease_name, renewal
from edge_runner.invoke.catalog import Catalog

log = logging.getLogger("edge_runner.sources.registration")

DEFAULT_LEASE_SECONDS = 15


def runner_identity() -> str:
    """POD_NAME (downward API) in a cluster, else host name and process id."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


def lease_seconds() -> int:
    return int(os.environ.get("EDGE_RUNNER_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Registration:
    def __init__(self, *, kube: KubeClient, namespace: str, catalog: Catalog,
                 runner_id: str | None = None, duration: int | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.catalog = catalog
        self.runner_id = runner_id or runner_identity()
        self.duration = duration or lease_seconds()
        self.path = resource_path("coordination.k8s.io", "v1", "leases", namespace,
                                  lease_name(self.runner_id))

    def digests(self) -> dict[str, str]:
        return {name: f"sha256:{runtime.digest}"
                for name, runtime in self.catalog.snapshot.functions.items()}

    async def _renew(self) -> None:
        try:
            await self.kube.merge_patch(self.path, renewal(digests=self.digests(), now=_now()))
        except NotFound:
            body = lease(runner_id=self.runner_id, namespace=self.namespace,
                         duration=self.duration, digests=self.digests(), now=_now())
            await self.kube.create(
                resource_path("coordination.k8s.io", "v1", "leases", self.namespace), body
            )
            log.info("registered as %s (lease %s)", self.runner_id, body["metadata"]["name"])

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until ``stop``; then remove the Lease (graceful shutdown)."""
        interval = self.duration / 3
        try:
            while not stop.is_set():
                try:
                    await self._renew()
                except (KubeError, httpx.HTTPError, OSError) as exc:
                    log.warning("heartbeat failed (%s); retrying", exc)
                changed = self.catalog.changed
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), interval)
        finally:
            await self.deregister()

    async def deregister(self) -> None:
        try:
            await asyncio.wait_for(self.kube.delete(self.path), 5)
            log.info("deregistered %s", self.runner_id)
        except (KubeError, httpx.HTTPError, OSError, TimeoutError) as exc:
            log.warning("could not remove lease on shutdown: %s", exc)
