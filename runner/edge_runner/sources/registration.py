"""Runner registration and heartbeat: this runner's Lease (cluster mode only).

Started by :func:`edge_runner.sources.cluster.watch_cluster` once the first sync is
applied, with that module's lightkube client.  Each heartbeat is one
server-side apply of the whole Lease (field manager ``edge-runner``), so it
also recreates the Lease if it vanished (the operator cleans up expired
Leases, or the API server lost it).  Renews every third of the Lease
duration, and at once when the catalog changes so the operator sees a new
digest served within a second; deletes the Lease on shutdown.  API errors are
logged and retried: a runner keeps serving whether or not it can report.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import socket

from lightkube import AsyncClient
from lightkube.resources.coordination_v1 import Lease
from lightkube.types import PatchType

from edge_api.k8s import KUBE_ERRORS
from edge_api.runners import lease, lease_name
from edge_runner.invoke.catalog import Catalog

log = logging.getLogger("edge_runner.sources.registration")

DEFAULT_LEASE_SECONDS = 15
#: Field manager of everything a runner writes (its Lease).
FIELD_MANAGER = "edge-runner"
_SHUTDOWN_ERRORS: tuple[type[BaseException], ...] = (*KUBE_ERRORS, TimeoutError)


def runner_identity() -> str:
    """Without a ``pod-name`` setting: host name and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Registration:
    def __init__(self, *, kube: AsyncClient, namespace: str, catalog: Catalog,
                 runner_id: str | None = None, duration: int | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.catalog = catalog
        self.runner_id = runner_id or runner_identity()
        self.duration = duration or DEFAULT_LEASE_SECONDS
        self.name = lease_name(self.runner_id)
        self.acquired = _now()
        self._registered = False

    def digests(self) -> dict[str, str]:
        return {name: f"sha256:{runtime.digest}"
                for name, runtime in self.catalog.snapshot.functions.items()}

    async def _renew(self) -> None:
        body = lease(runner_id=self.runner_id, namespace=self.namespace,
                     duration=self.duration, digests=self.digests(), now=_now(),
                     acquired=self.acquired)
        await self.kube.patch(Lease, self.name, body, namespace=self.namespace,
                              patch_type=PatchType.APPLY, field_manager=FIELD_MANAGER,
                              force=True)
        if not self._registered:
            self._registered = True
            log.info("registered as %s (lease %s)", self.runner_id, self.name)

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until ``stop``; then remove the Lease (graceful shutdown)."""
        interval = self.duration / 3
        try:
            while not stop.is_set():
                try:
                    await self._renew()
                except KUBE_ERRORS as exc:
                    log.warning("heartbeat failed (%s); retrying", exc)
                changed = self.catalog.changed
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), interval)
        finally:
            await self.deregister()

    async def deregister(self) -> None:
        try:
            await asyncio.wait_for(
                self.kube.delete(Lease, self.name, namespace=self.namespace), 5)
            log.info("deregistered %s", self.runner_id)
        except _SHUTDOWN_ERRORS as exc:
            log.warning("could not remove lease on shutdown: %s", exc)
