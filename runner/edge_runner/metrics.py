"""The runner's Prometheus metrics (docs/metrics.md).

One :class:`RunnerMetrics` per runner process, on its own registry (tests make
a fresh one each).  Labels are bounded: function names, status codes, reasons,
route ``name/rule`` identifiers; never a path or a request id.  What every
request counts (:class:`RequestCounts`) and what every function has a series
of (cold starts, evictions, thread waits, quarantines) are plain dictionaries
exported at scrape time (:mod:`edge_runner.plainmetrics`): no lock on the
request path, no per-series lock and value objects per function.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from edge_runner.invoke.policy import PoolEvents
from edge_runner.plainmetrics import PlainCounter, PlainHistogram

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Compiling a module: milliseconds for a small one, tens of seconds for a 64 MiB one.
COMPILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _PoolEvents(PoolEvents):
    """Pool events of one function.  Its series appear once it has something to count,
    each a dictionary entry (:mod:`edge_runner.plainmetrics`): a runner with 10,000
    functions, most of them idle, carries no series for the idle ones."""

    def __init__(self, metrics: RunnerMetrics, function: str) -> None:
        self._metrics = metrics
        self._key = (function,)

    def cold_start(self, seconds: float | None) -> None:
        self._metrics.cold_starts.inc(self._key)
        if seconds is not None:
            self._metrics.cold_start_duration.observe(self._key, seconds)

    def evicted(self, cause: str, count: int = 1) -> None:
        self._metrics.evictions.inc((*self._key, cause), count)

    def renewed(self) -> None:
        self._metrics.renewals.inc(self._key)

    def thread_wait(self, lane: str, seconds: float) -> None:
        self._metrics.worker_wait.observe((*self._key, lane), seconds)

    def quarantined(self, entered: bool) -> None:
        if entered:
            self._metrics.quarantines.inc(self._key)


class InstancesCollector(Collector):
    """``edge_instances{function,state}``, read from the live pools at scrape time."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "edge_instances", "Instances per function by state (idle, busy, waiting requests).",
            labels=["function", "state"],
        )
        for function, state, value in self._read():
            family.add_metric([function, state], value)
        yield family


class QuarantineCollector(Collector):
    """``edge_function_quarantined{function}``, read from the live pools at scrape time."""

    def __init__(self, read: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "edge_function_quarantined",
            "1 while the function runs on the quarantine lane of worker threads, else 0.",
            labels=["function"],
        )
        for function, quarantined in self._read():
            family.add_metric([function], int(quarantined))
        yield family


_C = TypeVar("_C", bound=Collector)
#: Route lookup results, in the order of :attr:`RequestCounts.lookups`.
LOOKUP_RESULTS = ("match", "not_found", "method_not_allowed")


class RequestCounts(Collector):
    """The data plane's per-request metrics: ``edge_requests_total``,
    ``edge_request_duration_seconds``, ``edge_route_requests_total`` and
    ``edge_route_lookups_total`` (:mod:`edge_runner.plainmetrics`, no lock: only the
    event loop thread counts them)."""

    def __init__(self) -> None:
        self.requests = PlainCounter(
            "edge_requests_total",
            "HTTP requests answered by the data plane, by function and status code.",
            ["function", "code"])
        self.durations = PlainHistogram(
            "edge_request_duration_seconds",
            "Time from request start to the last response byte, by function.",
            ["function"], LATENCY_BUCKETS)
        self.rules = PlainCounter(
            "edge_route_requests_total",
            "Requests matched per route rule (route name/rule index).", ["route", "rule"])
        #: Lookups by result, in the order of LOOKUP_RESULTS.
        self.lookups = [0, 0, 0]

    def request(self, function: str, status: int, seconds: float) -> None:
        """One answered request: its function (``""``: none), status and duration."""
        self.requests.inc((function, status))
        self.durations.observe((function,), seconds)

    def rule(self, route: str, index: int) -> None:
        """A request matched rule ``index`` of EdgeRoute ``route``."""
        self.rules.inc((route, index))

    def collect(self) -> Iterator[Metric]:
        yield from self.requests.collect()
        yield from self.durations.collect()
        yield from self.rules.collect()
        lookups = CounterMetricFamily(
            "edge_route_lookups_total",
            "Route lookups by result (match, not_found, method_not_allowed).",
            labels=["result"])
        for result, count in zip(LOOKUP_RESULTS, list(self.lookups), strict=True):
            if count:
                lookups.add_metric([result], count)
        yield lookups


class RunnerMetrics:
    def pool_events(self, function: str) -> PoolEvents:
        return _PoolEvents(self, function)

    def forget(self, functions: Collection[str], routes: Collection[str]) -> None:
        """Remove every series of these deleted functions and routes (their names as
        labels), so that a runner whose functions come and go does not keep a series
        for each one that ever existed.  A name that comes back starts from zero, which
        Prometheus reads as a counter reset.  Call it from the event loop."""
        counts = self.request_counts
        for family in (counts.requests, counts.durations, self.cold_starts,
                       self.cold_start_duration, self.evictions, self.renewals,
                       self.worker_wait, self.quarantines):
            family.forget(functions)
        counts.rules.forget(routes)
        for labelled, names in ((self.invocation_errors, functions),
                                (self.auth_decisions, routes)):
            if not names:
                continue
            for sample in [s for metric in labelled.collect() for s in metric.samples]:
                values = tuple(sample.labels.values())
                if values[0] in names and sample.name.endswith("_total"):
                    labelled.remove(*values)

    def watch_instances(self, read: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Export ``edge_instances`` from ``read`` (called at every scrape)."""
        self.registry.register(InstancesCollector(read))

    def watch_quarantine(self, read: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        """Export ``edge_function_quarantined`` from ``read`` (called at every scrape)."""
        self.registry.register(QuarantineCollector(read))

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def plain(metric: _C) -> _C:
            r.register(metric)
            return metric

        #: Counted by the data plane on every request (see RequestCounts).
        self.request_counts = RequestCounts()
        r.register(self.request_counts)
        self.invocation_errors = Counter(
            "edge_invocation_errors_total",
            "Failed invocations by function and reason (timeout, trap, memory, fuel, ...).",
            ["function", "reason"],
            registry=r,
        )
        # Per-function series updated from worker threads too: one lock for them all.
        pools = threading.Lock()
        self.cold_starts = plain(PlainCounter(
            "edge_cold_starts_total",
            "Instances created (a request that could not reuse a hot instance).",
            ["function"], pools))
        self.renewals = plain(PlainCounter(
            "edge_instance_renewals_total",
            "Instances renewed to their state at instantiation for another request"
            " (pool.reuse false).", ["function"], pools))
        self.module_cache = Counter(
            "edge_module_cache_requests_total",
            "Compiled-module cache lookups by result (hit, disk_hit, miss).",
            ["result"],
            registry=r,
        )
        self.compile_duration = Histogram(
            "edge_module_compile_seconds",
            "Time to compile a module (off the event loop) when no compiled artifact was"
            " cached.",
            buckets=COMPILE_BUCKETS,
            registry=r,
        )
        self.artifact_fetches = Counter(
            "edge_artifact_fetches_total",
            "Modules published by reference fetched from their source, by kind (oci, url,"
            " configMap) and result (ok, error).",
            ["kind", "result"],
            registry=r,
        )
        self.artifact_bytes = Counter(
            "edge_artifact_fetched_bytes_total",
            "Bytes of modules fetched by reference (bodies read), by kind.",
            ["kind"],
            registry=r,
        )
        self.cold_start_duration = plain(PlainHistogram(
            "edge_cold_start_duration_seconds",
            "Time to create an instance (instantiate from the compiled module), by function.",
            ["function"], LATENCY_BUCKETS, pools))
        self.evictions = plain(PlainCounter(
            "edge_instance_evictions_total",
            "Instances dropped by cause: failure, recycle (served its quota), idle"
            " (idleTimeout), budget (memory budget needed room), preempted (an inline"
            " call re-run on a thread).",
            ["function", "cause"], pools))
        self.functions_loaded = Gauge(
            "edge_functions", "Functions known to the runner by state (ready, error).", ["state"],
            registry=r,
        )
        self.auth_decisions = Counter(
            "edge_auth_decisions_total",
            "Authentication decisions of protected routes: allowed, unauthenticated (401),"
            " forbidden (403).",
            ["route", "result"], registry=r,
        )
        self.forged_configmaps = Gauge(
            "edge_forged_configmaps",
            "ConfigMaps with the operator's labels that fail the hand-off check; not served.",
            registry=r,
        )
        self.compiled_modules = Gauge(
            "edge_compiled_modules",
            "Modules of the runner running compiled to C (mypyc; the runner image); 0: all"
            " pure Python.",
            registry=r,
        )
        self.route_conflicts = Gauge(
            "edge_route_conflicts", "Route rules left out because they conflict.", registry=r
        )
        self.memory_budget = Gauge(
            "edge_memory_budget_bytes",
            "The runner's guest memory budget by kind: limit (cgroup or configured), baseline"
            " (own resident memory at start), usable (fraction of limit minus baseline),"
            " reserved (limits.memory of live instances), headroom (usable minus reserved).",
            ["kind"],
            registry=r,
        )
        self.worker_wait = plain(PlainHistogram(
            "edge_worker_wait_seconds",
            "Time calls waited for a worker thread, by function and lane (shared,"
            " quarantine); 0 for a call that found one free.",
            ["function", "lane"], LATENCY_BUCKETS, pools))
        self.quarantines = plain(PlainCounter(
            "edge_quarantines_total",
            "Times a function was moved to the quarantine lane of worker threads.",
            ["function"], pools))
        self.access_log_dropped = Counter(
            "edge_access_log_dropped_lines_total",
            "Access log lines dropped because the log's reader did not keep up or is gone.",
            registry=r,
        )
        self.reloads = Counter(
            "edge_config_reloads_total",
            "Applications of a new desired configuration by result (ok, error).",
            ["result"],
            registry=r,
        )
