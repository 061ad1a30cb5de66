"""Cluster mode: functions and routes from the operator's ConfigMaps (not built yet)."""

from __future__ import annotations

import asyncio

from edge_runner.catalog import Catalog


async def watch_cluster(catalog: Catalog, stop: asyncio.Event, *, namespace: str | None) -> None:
    raise NotImplementedError("cluster mode is not implemented yet; use --manifests DIR")
