"""Operator settings: one dataclass, every field with its unit and why its default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edge_api.wire import MAX_MODULE_BYTES

#: Seconds between re-checks of every function by a kopf timer: catches edits of
#: a referenced ConfigMap or URL; unchanged objects cause no writes.
RESYNC_SECONDS: Final = 60.0


@dataclass(frozen=True)
class OperatorConfig:
    #: Largest module fetched from a ``source.url`` (bytes).  A ConfigMap holds
    #: 1 MiB, so anything larger could not be published anyway.
    max_url_bytes: int = MAX_MODULE_BYTES
    #: Seconds a ``source.url`` download may take before it counts as failed.
    url_timeout: float = 30.0
    #: Seconds between rollout recounts when no runner Lease changes; Lease
    #: events trigger a recount at once, this only catches expiries.
    rollout_interval: float = 2.0
