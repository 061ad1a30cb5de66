"""Status conditions in the Kubernetes shape (type, status, reason, message,
lastTransitionTime, observedGeneration), merged without churn.

Pure: the reconcilers compute the conditions they want; :func:`owned` builds
them in the Kubernetes shape and keeps ``lastTransitionTime`` when a
condition's status did not change, so a second reconcile of an unchanged
object produces an identical status (and therefore no write).  Each status
writer applies only its own conditions (see :mod:`edge_operator.status`);
:func:`merge` is the whole list as the API server holds it after such an apply.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Condition = dict[str, Any]


@dataclass(frozen=True)
class Want:
    """A condition as a reconciler wants it."""

    type: str
    status: bool | None  # None = Unknown
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return "Unknown" if self.status is None else ("True" if self.status else "False")


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def owned(current: Iterable[Condition] | None, wanted: Iterable[Want], generation: int | None,
          *, timestamp: str | None = None) -> list[Condition]:
    """The ``wanted`` conditions, sorted by type, each keeping its ``lastTransitionTime``
    from ``current`` if its status did not change."""
    existing = {c.get("type"): c for c in (current or [])}
    stamp = timestamp or now()
    result: dict[str, Condition] = {}
    for want in wanted:
        old = existing.get(want.type) or {}
        changed = old.get("status") != want.status_text
        condition: Condition = {
            "type": want.type,
            "status": want.status_text,
            "reason": want.reason,
            "message": want.message[:1024],
            "lastTransitionTime": stamp if changed or "lastTransitionTime" not in old
            else old["lastTransitionTime"],
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        result[want.type] = condition
    return sorted(result.values(), key=lambda c: str(c["type"]))


def merge(current: Iterable[Condition] | None, wanted: Iterable[Want], generation: int | None,
          *, timestamp: str | None = None) -> list[Condition]:
    """The new ``conditions`` list: wanted ones updated, others kept as they were."""
    current = list(current or [])
    merged: dict[str, Condition] = {str(c["type"]): dict(c) for c in current if c.get("type")}
    for condition in owned(current, wanted, generation, timestamp=timestamp):
        merged[condition["type"]] = condition
    return sorted(merged.values(), key=lambda c: str(c["type"]))


def unchanged(current: Iterable[Condition] | None, conditions: Iterable[Condition]) -> bool:
    """True if ``current`` already holds each of ``conditions`` exactly."""
    existing = {c.get("type"): c for c in (current or [])}
    return all(existing.get(c["type"]) == c for c in conditions)


def find(conditions: Iterable[Condition] | None, kind: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)
