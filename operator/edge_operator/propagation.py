"""Rollout tracking: how many live runners serve each function's current digest.

A loop per operator (started by :mod:`edge_operator.handlers` at startup) lists
runner Leases of each watched namespace whenever a Lease changes (kopf event
handler wakes it) and at least every ``interval`` seconds, and the
EdgeFunctions only when the answer can have changed: the live runners or what
they serve changed, the reconciler wrote a function's status (:attr:`written`),
or :data:`FULL_RECOUNT_SECONDS` passed (so a quiet namespace of 1,000 functions
is not listed every few seconds, only leases are);
:func:`aggregate` (pure) computes ``readyRunners``/``totalRunners`` and the
``Propagated`` condition.  The tracker is the only writer of those fields and
applies them by server-side apply under its own field manager
(``edge-operator-rollout``, see :mod:`edge_operator.status`), so it never
touches ``Ready`` or ``ModuleValid``; only functions whose rollout status
differs are written.  Leases expired for longer than ``cleanup_after`` lease
durations are deleted.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.coordination_v1 import Lease

from edge_api.constants import KIND_FUNCTION, LABEL_KIND
from edge_api.k8s import KUBE_ERRORS, EdgeFunctionResource, is_not_found
from edge_api.runners import LABEL_KIND_RUNNER, RunnerRecord, parse_lease
from edge_operator.conditions import Want, find
from edge_operator.metrics import OperatorMetrics
from edge_operator.status import ROLLOUT_MANAGER, apply_status, rollout_status

log = logging.getLogger("edge_operator.propagation")


@dataclass(frozen=True)
class Rollout:
    ready: int
    total: int
    condition: Want

    def fields(self) -> dict[str, Any]:
        return {"readyRunners": self.ready, "totalRunners": self.total,
                "runners": f"{self.ready}/{self.total}"}


def aggregate(name: str, digest: str | None, runners: list[RunnerRecord]) -> Rollout:
    """Rollout of one function over the live runners."""
    total = len(runners)
    ready = sum(1 for r in runners if digest and r.digests.get(name) == digest)
    if digest is None:
        want = Want("Propagated", False, "NotPublished", "the function is not published")
    elif total == 0:
        want = Want("Propagated", False, "NoRunners", "no live runner in this namespace")
    elif ready == total:
        want = Want("Propagated", True, "AllRunnersServing",
                    f"all {total} live runners serve {digest[:19]}")
    else:
        behind = sorted(r.runner_id for r in runners if r.digests.get(name) != digest)
        want = Want("Propagated", False, "Rolling",
                    f"{ready}/{total} runners serve {digest[:19]}; waiting for "
                    + ", ".join(behind[:5]))
    return Rollout(ready, total, want)


#: Seconds after which the functions are recounted even if nothing said they changed.
FULL_RECOUNT_SECONDS = 60.0


class PropagationTracker:
    def __init__(self, *, kube: AsyncClient, namespaces: list[str], metrics: OperatorMetrics,
                 interval: float = 5.0, cleanup_after: float = 3.0) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.metrics = metrics
        self.interval = interval
        self.cleanup_after = cleanup_after
        self.wake = asyncio.Event()
        #: Set by the reconciler after it wrote a function's status.
        self.written = asyncio.Event()
        self._exported: dict[str, set[str]] = {}
        self._runners: dict[str, object] = {}
        self._recounted: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            self.wake.clear()
            written = self.written.is_set()
            self.written.clear()
            for namespace in self.namespaces:
                try:
                    await self.sync(namespace, force=written)
                except KUBE_ERRORS as exc:
                    log.warning("rollout tracking in %s failed: %s", namespace, exc)
            waits = [asyncio.ensure_future(event.wait()) for event in (self.wake, self.written)]
            try:
                await asyncio.wait(waits, timeout=self.interval,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def sync(self, namespace: str, *, force: bool = True) -> None:
        now = datetime.datetime.now(datetime.UTC)
        leases = [lease.to_dict() async for lease in self.kube.list(
            Lease, namespace=namespace, labels={LABEL_KIND: LABEL_KIND_RUNNER})]
        records = [r for r in map(parse_lease, leases) if r is not None]
        live = [r for r in records if r.alive(now)]
        for record in records:
            limit = record.renewed + datetime.timedelta(seconds=record.duration
                                                        * self.cleanup_after)
            if now > limit:
                await self._delete_lease(namespace, record)
        self.metrics.live_runners.labels(namespace).set(len(live))
        runners = sorted((r.runner_id, sorted(r.digests.items())) for r in live)
        clock = time.monotonic()
        if not force and self._runners.get(namespace) == runners \
                and clock - self._recounted.get(namespace, -math.inf) < FULL_RECOUNT_SECONDS:
            return  # no runner came, went or changed what it serves; no status was written
        self._runners[namespace], self._recounted[namespace] = runners, clock
        functions = [dict(f) async for f in self.kube.list(EdgeFunctionResource,
                                                           namespace=namespace)]
        seen = set()
        for function in functions:
            seen.add(function["metadata"]["name"])
            await self._update(namespace, function, live)
        for name in self._exported.get(namespace, set()) - seen:
            for state in ("ready", "total"):
                self.metrics.function_runners.remove(namespace, name, state)
        self._exported[namespace] = seen

    async def _delete_lease(self, namespace: str, record: RunnerRecord) -> None:
        log.info("runner %s expired; removing its lease", record.runner_id)
        try:
            await self.kube.delete(Lease, record.name, namespace=namespace)
        except KUBE_ERRORS as exc:
            if not is_not_found(exc):
                raise
            return
        self.metrics.writes.labels("lease", "delete").inc()

    async def _update(self, namespace: str, function: dict[str, Any],
                      live: list[RunnerRecord]) -> None:
        metadata, status = function["metadata"], function.get("status") or {}
        rollout = aggregate(metadata["name"], published_digest(status), live)
        self.metrics.function_runners.labels(namespace, metadata["name"], "ready").set(
            rollout.ready)
        self.metrics.function_runners.labels(namespace, metadata["name"], "total").set(
            rollout.total)
        wanted = rollout_status(status, rollout.fields(), rollout.condition,
                                metadata.get("generation"))
        if wanted is None:
            return
        await apply_status(self.kube, KIND_FUNCTION, name=metadata["name"],
                           namespace=namespace, status=wanted, manager=ROLLOUT_MANAGER,
                           metrics=self.metrics)


def published_digest(status: dict[str, Any]) -> str | None:
    """The digest runners should serve: the status digest while ``Ready`` is True."""
    ready = find(status.get("conditions"), "Ready")
    return status.get("digest") if ready and ready.get("status") == "True" else None
