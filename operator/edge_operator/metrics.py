"""The operator's Prometheus metrics, served on its own metrics port."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "edge_operator_reconciles_total",
            "Reconciles by kind (function, route) and result (ok, invalid, error).",
            ["kind", "result"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "edge_operator_reconcile_duration_seconds",
            "Time one reconcile took, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.function_runners = Gauge(
            "edge_operator_function_runners",
            "Live runners per function: state=total, or state=ready (serving its current digest).",
            ["namespace", "function", "state"],
            registry=self.registry,
        )
        self.live_runners = Gauge(
            "edge_operator_live_runners", "Runners with an unexpired Lease, by namespace.",
            ["namespace"], registry=self.registry,
        )
        self.writes = Counter(
            "edge_operator_writes_total",
            "Objects the operator created, replaced or patched, by kind of object.",
            ["object", "verb"],
            registry=self.registry,
        )
