"""Cluster mode: the Secrets that routes' auth and functions' env name, by name.

Used by :mod:`edge_runner.sources.cluster` on every apply and every
:data:`REFRESH_SECONDS` (so a rotated key or changed env value reaches the
guests without a restart).  Only ``get`` of a named Secret: the runner never
lists or watches Secrets, so it cannot enumerate them, and it reads only those
that an EdgeRoute or EdgeFunction of its namespace names (docs/resources.md,
"Secrets").  Values stay in memory; nothing here logs them.
"""

from __future__ import annotations

import logging

from lightkube import ApiError, AsyncClient
from lightkube.resources.core_v1 import Secret

from edge_api.k8s import status_code
from edge_runner.invoke.catalog import DesiredState
from edge_runner.sources.secrets import attach, decode_secret, needed

log = logging.getLogger("edge_runner.sources.cluster_secrets")

#: Seconds between re-reads of the Secrets in use.
REFRESH_SECONDS = 10.0


class ClusterSecrets:
    def __init__(self, client: AsyncClient, namespace: str) -> None:
        self._client = client
        self._namespace = namespace
        self.found: dict[str, dict[str, bytes] | None] = {}
        #: The names the last applied state needed (what a refresh reads again).
        self.names: set[str] = set()

    async def refresh(self) -> bool:
        """Read the Secrets in use again; True if any changed (then apply a new state)."""
        return await self.read(self.names)

    async def read(self, names: set[str]) -> bool:
        """Get every Secret in ``names``; True if what was found changed."""
        found: dict[str, dict[str, bytes] | None] = {}
        for name in sorted(names):
            try:
                secret = await self._client.get(Secret, name, namespace=self._namespace)
            except ApiError as exc:
                if status_code(exc) not in (403, 404):
                    raise
                if status_code(exc) == 403:
                    log.warning("not allowed to get Secret %s (runner RBAC)", name)
                found[name] = None
                continue
            found[name] = decode_secret(secret.to_dict())
        changed = found != self.found
        self.found = found
        return changed

    async def attach(self, state: DesiredState) -> DesiredState:
        """Read what ``state`` needs and put it in (see sources.secrets.attach)."""
        self.names = needed(state)
        await self.read(self.names)
        attach(state, self.found)
        return state
