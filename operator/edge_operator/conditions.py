"""Status conditions in the Kubernetes shape (type, status, reason, message,
lastTransitionTime, observedGeneration), merged without churn.

Pure: the reconcilers compute the conditions they want and :func:`merge`
keeps ``lastTransitionTime`` when a condition's status did not change, so a
second reconcile of an unchanged object produces an identical status (and
therefore no write).
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


def merge(current: Iterable[Condition] | None, wanted: Iterable[Want], generation: int | None,
          *, timestamp: str | None = None) -> list[Condition]:
    """The new ``conditions`` list: wanted ones updated, others kept as they were."""
    existing = {c.get("type"): c for c in (current or [])}
    stamp = timestamp or now()
    merged: dict[str, Condition] = {str(k): dict(v) for k, v in existing.items() if k}
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
        merged[want.type] = condition
    return sorted(merged.values(), key=lambda c: str(c["type"]))


def find(conditions: Iterable[Condition] | None, kind: str) -> Condition | None:
    return next((c for c in conditions or [] if c.get("type") == kind), None)
