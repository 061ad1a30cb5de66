"""Runner registration records: one ``coordination.k8s.io`` Lease per runner.

A runner server-side applies its Lease when it starts and again every third
of ``leaseDurationSeconds`` (a new ``spec.renewTime``), records in an
annotation which digest of each function it serves, and deletes the Lease on
graceful shutdown.  The operator lists these Leases to count live runners and
how many serve each function's current digest.  Pure builders and parsers,
shared by both.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass
from typing import Any

from edge_api.constants import GROUP, LABEL_KIND, LABEL_MANAGED_BY

LABEL_KIND_RUNNER = "runner"
ANNOTATION_DIGESTS = f"{GROUP}/digests"
LEASE_PREFIX = "edge-runner-"
#: Label selector of runner Leases.
RUNNER_SELECTOR = f"{LABEL_KIND}={LABEL_KIND_RUNNER}"


def micro_time(moment: datetime.datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 with microseconds, UTC."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def lease_name(runner_id: str) -> str:
    safe = re.sub(r"[^a-z0-9.-]+", "-", runner_id.lower()).strip("-.") or "runner"
    return (LEASE_PREFIX + safe)[:253]


def lease(*, runner_id: str, namespace: str, duration: int, digests: dict[str, str],
          now: datetime.datetime, acquired: datetime.datetime | None = None) -> dict[str, Any]:
    """The whole Lease as the runner applies it; ``acquired`` defaults to ``now``."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": lease_name(runner_id),
            "namespace": namespace,
            "labels": {LABEL_KIND: LABEL_KIND_RUNNER, LABEL_MANAGED_BY: "edge-runner"},
            "annotations": {ANNOTATION_DIGESTS: json.dumps(digests, sort_keys=True)},
        },
        "spec": {
            "holderIdentity": runner_id,
            "leaseDurationSeconds": duration,
            "acquireTime": micro_time(acquired or now),
            "renewTime": micro_time(now),
        },
    }


@dataclass(frozen=True)
class RunnerRecord:
    name: str
    runner_id: str
    renewed: datetime.datetime
    duration: float
    digests: dict[str, str]

    def expires(self) -> datetime.datetime:
        return self.renewed + datetime.timedelta(seconds=self.duration)

    def alive(self, now: datetime.datetime) -> bool:
        return now < self.expires()


def parse_lease(obj: dict[str, Any]) -> RunnerRecord | None:
    """A runner Lease as a record, or None if it is not one (or is malformed)."""
    metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    try:
        digests = json.loads((metadata.get("annotations") or {}).get(ANNOTATION_DIGESTS, "{}"))
        renewed = parse_time(spec.get("renewTime") or spec["acquireTime"])
        return RunnerRecord(
            name=metadata["name"],
            runner_id=str(spec.get("holderIdentity", "")),
            renewed=renewed,
            duration=float(spec.get("leaseDurationSeconds", 15)),
            digests={str(k): str(v) for k, v in dict(digests).items()},
        )
    except (KeyError, ValueError, TypeError):
        return None
