"""Rollout tracking: how many live runners serve each function's current digest.

A loop per operator (started by :mod:`edge_operator.handlers` at startup) lists
runner Leases and EdgeFunctions of each watched namespace whenever a Lease
changes (kopf event handler wakes it) and at least every ``interval`` seconds;
:func:`aggregate` (pure) computes ``readyRunners``/``totalRunners`` and the
``Propagated`` condition; only functions whose status differs are patched.
Leases expired for longer than ``cleanup_after`` lease durations are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from dataclasses import dataclass
from typing import Any

import httpx

from edge_api.constants import GROUP, PLURAL_FUNCTION, VERSION
from edge_api.kube import KubeClient, KubeError, NotFound, resource_path
from edge_api.runners import RUNNER_SELECTOR, RunnerRecord, parse_lease
from edge_operator.conditions import Want, find, merge
from edge_operator.metrics import OperatorMetrics

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


class PropagationTracker:
    def __init__(self, *, kube: KubeClient, namespaces: list[str], metrics: OperatorMetrics,
                 interval: float = 5.0, cleanup_after: float = 3.0) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.metrics = metrics
        self.interval = interval
        self.cleanup_after = cleanup_after
        self.wake = asyncio.Event()
        self._exported: dict[str, set[str]] = {}

    async def run(self) -> None:
        while True:
            self.wake.clear()
            for namespace in self.namespaces:
                try:
                    await self.sync(namespace)
                except (KubeError, httpx.HTTPError, OSError) as exc:
                    log.warning("rollout tracking in %s failed: %s", namespace, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)

    async def sync(self, namespace: str) -> None:
        now = datetime.datetime.now(datetime.UTC)
        leases = await self.kube.list(
            resource_path("coordination.k8s.io", "v1", "leases", namespace),
            label_selector=RUNNER_SELECTOR,
        )
        records = [r for r in map(parse_lease, leases.get("items", [])) if r is not None]
        live = [r for r in records if r.alive(now)]
        for record in records:
            limit = record.renewed + datetime.timedelta(seconds=record.duration
                                                        * self.cleanup_after)
            if now > limit:
                await self._delete_lease(namespace, record)
        functions = await self.kube.list(resource_path(GROUP, VERSION, PLURAL_FUNCTION,
                                                       namespace))
        self.metrics.live_runners.labels(namespace).set(len(live))
        seen = set()
        for function in functions.get("items", []):
            seen.add(function["metadata"]["name"])
            await self._update(namespace, function, live)
        for name in self._exported.get(namespace, set()) - seen:
            for state in ("ready", "total"):
                self.metrics.function_runners.remove(namespace, name, state)
        self._exported[namespace] = seen

    async def _delete_lease(self, namespace: str, record: RunnerRecord) -> None:
        log.info("runner %s expired; removing its lease", record.runner_id)
        with contextlib.suppress(NotFound):
            await self.kube.delete(resource_path("coordination.k8s.io", "v1", "leases",
                                                 namespace, record.name))
            self.metrics.writes.labels("lease", "delete").inc()

    async def _update(self, namespace: str, function: dict[str, Any],
                      live: list[RunnerRecord]) -> None:
        metadata, status = function["metadata"], function.get("status") or {}
        ready = find(status.get("conditions"), "Ready")
        digest = status.get("digest") if ready and ready.get("status") == "True" else None
        rollout = aggregate(metadata["name"], digest, live)
        self.metrics.function_runners.labels(namespace, metadata["name"], "ready").set(
            rollout.ready)
        self.metrics.function_runners.labels(namespace, metadata["name"], "total").set(
            rollout.total)
        fields = rollout.fields()
        current = find(status.get("conditions"), "Propagated")
        unchanged = all(status.get(k) == v for k, v in fields.items()) and current is not None \
            and current.get("status") == rollout.condition.status_text \
            and current.get("reason") == rollout.condition.reason \
            and current.get("message") == rollout.condition.message
        if unchanged:
            return
        patch = {
            "metadata": {"resourceVersion": metadata["resourceVersion"]},
            "status": {**fields, "conditions": merge(status.get("conditions"),
                                                     [rollout.condition],
                                                     metadata.get("generation"))},
        }
        try:
            await self.kube.merge_patch(
                resource_path(GROUP, VERSION, PLURAL_FUNCTION, namespace, metadata["name"],
                              "status"), patch)
        except KubeError as exc:
            if exc.status in (404, 409):  # gone, or changed meanwhile: next pass redoes it
                self.wake.set()
                return
            raise
        self.metrics.writes.labels("edgefunction-status", "patch").inc()
