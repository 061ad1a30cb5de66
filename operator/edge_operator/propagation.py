"""Rollout tracking: how many live runners serve each function's current digest.

A loop per operator (started by :mod:`edge_operator.handlers` at startup)
recounts when a runner Lease changes (the kopf Lease handler sets
:attr:`PropagationTracker.wake`), when an EdgeFunction changes (the kopf
EdgeFunction event handler calls :meth:`PropagationTracker.function_event`)
and at least every ``interval`` seconds (expiries).  It keeps the namespace's
EdgeFunctions as the watch reports them, so a recount reads only the Leases:
when the live runners or what they serve changed, every function is
recounted; otherwise only the functions that changed since the last pass.
The EdgeFunctions are listed again every :data:`FULL_RECOUNT_SECONDS` (a
safety net under the watch).  :func:`aggregate` (pure) computes
``readyRunners``/``totalRunners`` and the ``Propagated`` condition.

Writes are coalesced and bounded: passes run at most once per
:data:`MIN_PASS_SECONDS` (changes meanwhile are folded into the next pass, so
a function is written at most once per pass, with its latest counts), a pass
writes only functions whose rollout status differs from what the object
shows, a few at once (:func:`edge_operator.status.bounded`), and functions never reconciled yet
(no ``observedGeneration``) are left to their first reconcile: after a bulk
apply of 1,000 functions the tracker does not write 1,000 ``NotPublished``
statuses that the reconciles make stale at once.  The first pass after a quiet
spell runs at once, so a lone change is counted without waiting.

The tracker is the only writer of those fields and applies them by
server-side apply under its own field manager (``edge-operator-rollout``, see
:mod:`edge_operator.status`), so it never touches ``Ready`` or
``ModuleValid``.  Leases expired for longer than ``cleanup_after`` lease
durations are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from lightkube import AsyncClient
from lightkube.resources.coordination_v1 import Lease

from edge_api.constants import KIND_FUNCTION, LABEL_KIND
from edge_api.k8s import KUBE_ERRORS, EdgeFunctionResource, is_not_found
from edge_api.runners import LABEL_KIND_RUNNER, RunnerRecord, parse_lease
from edge_operator.conditions import Want, find
from edge_operator.metrics import OperatorMetrics
from edge_operator.status import (
    ROLLOUT_MANAGER,
    Status,
    apply_status,
    bounded,
    rollout_status,
)

log = logging.getLogger("edge_operator.propagation")

#: Seconds after which the EdgeFunctions are listed and recounted even if nothing
#: said they changed.
FULL_RECOUNT_SECONDS: Final = 60.0
#: Shortest time between the starts of two passes: what changes meanwhile is counted
#: (and written) once, by the next pass.
MIN_PASS_SECONDS: Final = 0.5


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


def published_digest(status: Mapping[str, Any]) -> str | None:
    """The digest runners should serve: the status digest while ``Ready`` is True."""
    ready = find(status.get("conditions"), "Ready")
    return status.get("digest") if ready and ready.get("status") == "True" else None


def after_apply(status: Mapping[str, Any], applied: Status) -> dict[str, Any]:
    """``status`` as the API server holds it once ``applied`` (one writer's fields and
    conditions) was applied: other writers' conditions are kept."""
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    conditions.update({c["type"]: c for c in applied["conditions"]})
    return {**status, **applied,
            "conditions": sorted(conditions.values(), key=lambda c: str(c.get("type")))}


@dataclass
class _Namespace:
    """What the tracker knows of one namespace."""

    #: name -> (generation, status) of each EdgeFunction, as the watch last reported it.
    functions: dict[str, tuple[int | None, dict[str, Any]]]
    #: Functions that changed since the last pass.
    dirty: set[str]
    #: The live runners and what they serve, as of the last pass.
    runners: object = None
    #: When the EdgeFunctions were last listed (monotonic; -inf: never).
    listed: float = -math.inf
    #: Functions the watch reported since the last list began.
    reported: set[str] = field(default_factory=set)


class PropagationTracker:
    def __init__(self, *, kube: AsyncClient, namespaces: list[str], metrics: OperatorMetrics,
                 interval: float = 5.0, cleanup_after: float = 3.0,
                 min_pass: float = MIN_PASS_SECONDS) -> None:
        self.kube = kube
        self.namespaces = namespaces
        self.metrics = metrics
        self.interval = interval
        self.cleanup_after = cleanup_after
        self.min_pass = min(min_pass, interval)
        self.wake = asyncio.Event()
        self._state = {namespace: _Namespace({}, set()) for namespace in namespaces}

    def function_event(self, event: str, body: Mapping[str, Any]) -> None:
        """The watch reported an EdgeFunction (ADDED, MODIFIED, DELETED): recount it at
        the next pass if its generation or status changed."""
        metadata = body.get("metadata") or {}
        state = self._state.get(str(metadata.get("namespace")))
        if state is None:
            return
        name = str(metadata.get("name"))
        state.reported.add(name)
        if event == "DELETED" or metadata.get("deletionTimestamp"):
            changed = state.functions.pop(name, None) is not None
        else:
            seen = (metadata.get("generation"), dict(body.get("status") or {}))
            changed = state.functions.get(name) != seen
            state.functions[name] = seen
        if changed:
            state.dirty.add(name)
            self.wake.set()

    async def run(self) -> None:
        while True:
            self.wake.clear()
            started = time.monotonic()
            for namespace in self.namespaces:
                try:
                    await self.sync(namespace)
                except KUBE_ERRORS as exc:
                    log.warning("rollout tracking in %s failed: %s", namespace, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.interval)
            # Coalesce: what changes while this sleeps is counted by one pass.
            await asyncio.sleep(max(0.0, started + self.min_pass - time.monotonic()))

    async def sync(self, namespace: str) -> None:
        state = self._state.setdefault(namespace, _Namespace({}, set()))
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
        every = clock - state.listed >= FULL_RECOUNT_SECONDS
        if every:
            await self._list(namespace, state)
            state.listed = clock
        every = every or state.runners != runners
        state.runners = runners
        names, state.dirty = (set(state.functions) | state.dirty if every else state.dirty), set()
        writes = []
        for name in sorted(names):
            seen = state.functions.get(name)
            if seen is None:  # gone
                for label in ("ready", "total"):
                    with contextlib.suppress(KeyError):
                        self.metrics.function_runners.remove(namespace, name, label)
                continue
            wanted = self._count(namespace, name, seen, live)
            if wanted is not None:
                writes.append(self._write(namespace, name, state, wanted))
        await bounded(writes)

    async def _list(self, namespace: str, state: _Namespace) -> None:
        state.reported = set()
        listed = {}
        async for item in self.kube.list(EdgeFunctionResource, namespace=namespace):
            function = dict(item)
            metadata = function["metadata"]
            if not metadata.get("deletionTimestamp"):
                listed[metadata["name"]] = (metadata.get("generation"),
                                            dict(function.get("status") or {}))
        for name in state.reported:  # the watch's report is at least as new as the list
            if name in state.functions:
                listed[name] = state.functions[name]
            else:
                listed.pop(name, None)
        state.dirty |= set(state.functions) - set(listed)
        state.functions = listed

    def _count(self, namespace: str, name: str, seen: tuple[int | None, dict[str, Any]],
               live: list[RunnerRecord]) -> Status | None:
        """The rollout status to apply to the function (None: nothing to write)."""
        generation, status = seen
        rollout = aggregate(name, published_digest(status), live)
        self.metrics.function_runners.labels(namespace, name, "ready").set(rollout.ready)
        self.metrics.function_runners.labels(namespace, name, "total").set(rollout.total)
        if status.get("observedGeneration") is None:
            return None  # not reconciled yet: its first reconcile comes first
        return rollout_status(status, rollout.fields(), rollout.condition, generation)

    async def _write(self, namespace: str, name: str, state: _Namespace,
                     wanted: Status) -> None:
        try:
            await apply_status(self.kube, KIND_FUNCTION, name=name, namespace=namespace,
                               status=wanted, manager=ROLLOUT_MANAGER, metrics=self.metrics)
        except KUBE_ERRORS as exc:
            log.warning("rollout status of %s not written: %s", name, exc,
                        extra={"object": f"{namespace}/{name}", "kind": KIND_FUNCTION})
            state.dirty.add(name)  # tried again by the next pass
            return
        seen = state.functions.get(name)
        if seen is not None:  # until the watch reports the write: no second write
            state.functions[name] = (seen[0], after_apply(seen[1], wanted))

    async def _delete_lease(self, namespace: str, record: RunnerRecord) -> None:
        log.info("runner %s expired; removing its lease", record.runner_id)
        try:
            await self.kube.delete(Lease, record.name, namespace=namespace)
        except KUBE_ERRORS as exc:
            if not is_not_found(exc):
                raise
            return
        self.metrics.writes.labels("lease", "delete").inc()
