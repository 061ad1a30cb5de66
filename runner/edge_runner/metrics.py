"""The runner's Prometheus metrics (docs/metrics.md).

One :class:`RunnerMetrics` per runner process, on its own registry (tests make
a fresh one each).  Labels are bounded: function names, status codes, reasons,
route ``name/rule`` identifiers; never a path or a request id.  What every
request counts (requests, durations, route lookups and rules) is kept by
:class:`RequestCounts` in plain dictionaries and exported at scrape time, so
the request path takes no lock and builds no label child.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from edge_runner.invoke.pool import PoolEvents

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
#: Compiling a module: milliseconds for a small one, tens of seconds for a 64 MiB one.
COMPILE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _PoolEvents(PoolEvents):
    """Pool events of one function, counted with label children resolved at first use
    (a runner with 10,000 functions most of which are idle does not carry ~100 series
    for each of them: a function's series appear once it has something to count)."""

    def __init__(self, metrics: RunnerMetrics, function: str) -> None:
        self._metrics = metrics
        self._function = function
        self._cold: Any = None
        self._duration: Any = None
        self._waits: dict[str, Any] = {}

    def cold_start(self, seconds: float | None) -> None:
        if self._cold is None:
            self._cold = self._metrics.cold_starts.labels(self._function)
            self._duration = self._metrics.cold_start_duration.labels(self._function)
        self._cold.inc()
        if seconds is not None:
            self._duration.observe(seconds)

    def evicted(self, cause: str, count: int = 1) -> None:
        self._metrics.evictions.labels(self._function, cause).inc(count)

    def thread_wait(self, lane: str, seconds: float) -> None:
        child = self._waits.get(lane)
        if child is None:
            child = self._waits[lane] = self._metrics.worker_wait.labels(self._function, lane)
        child.observe(seconds)

    def quarantined(self, entered: bool) -> None:
        if entered:
            self._metrics.quarantines.labels(self._function).inc()


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


#: The ``le`` labels of LATENCY_BUCKETS and +Inf, as prometheus_client writes them.
_BOUNDS = (*(floatToGoString(b) for b in LATENCY_BUCKETS), "+Inf")  # type: ignore[no-untyped-call]
#: Route lookup results, in the order of :attr:`RequestCounts.lookups`.
LOOKUP_RESULTS = ("match", "not_found", "method_not_allowed")


class RequestCounts(Collector):
    """The data plane's per-request metrics, counted in plain dictionaries.

    ``edge_requests_total``, ``edge_request_duration_seconds``,
    ``edge_route_requests_total`` and ``edge_route_lookups_total``, exported at
    scrape time with the same names, labels and buckets as ``prometheus_client``
    metrics.  Only the event loop thread counts (one writer, no lock); a scrape
    copies each dictionary and list first (a copy is atomic under the GIL).
    """

    def __init__(self) -> None:
        #: (function, status) -> requests answered.
        self.requests: dict[tuple[str, int], int] = {}
        #: function -> one count per bucket of LATENCY_BUCKETS, one for +Inf, then the sum.
        self.durations: dict[str, list[float]] = {}
        #: (route, rule index) -> requests matched.
        self.rules: dict[tuple[str, int], int] = {}
        #: Lookups by result, in the order of LOOKUP_RESULTS.
        self.lookups = [0, 0, 0]

    def request(self, function: str, status: int, seconds: float) -> None:
        """One answered request: its function (``""``: none), status and duration."""
        key = (function, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        counts = self.durations.get(function)
        if counts is None:
            counts = self.durations[function] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        counts[-1] += seconds

    def rule(self, route: str, index: int) -> None:
        """A request matched rule ``index`` of EdgeRoute ``route``."""
        key = (route, index)
        rules = self.rules
        rules[key] = rules.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "edge_requests_total",
            "HTTP requests answered by the data plane, by function and status code.",
            labels=["function", "code"])
        for (function, status), count in list(self.requests.items()):
            requests.add_metric([function, str(status)], count)
        yield requests
        duration = HistogramMetricFamily(
            "edge_request_duration_seconds",
            "Time from request start to the last response byte, by function.",
            labels=["function"])
        for function, live in list(self.durations.items()):
            counts = list(live)
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for bound, in_bucket in zip(_BOUNDS, counts, strict=False):
                total += in_bucket
                buckets.append((bound, total))
            duration.add_metric([function], buckets, sum_value=counts[-1])
        yield duration
        rules = CounterMetricFamily(
            "edge_route_requests_total",
            "Requests matched per route rule (route name/rule index).",
            labels=["route", "rule"])
        for (route, index), count in list(self.rules.items()):
            rules.add_metric([route, str(index)], count)
        yield rules
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

    def watch_instances(self, read: Callable[[], Iterable[tuple[str, str, int]]]) -> None:
        """Export ``edge_instances`` from ``read`` (called at every scrape)."""
        self.registry.register(InstancesCollector(read))

    def watch_quarantine(self, read: Callable[[], Iterable[tuple[str, bool]]]) -> None:
        """Export ``edge_function_quarantined`` from ``read`` (called at every scrape)."""
        self.registry.register(QuarantineCollector(read))

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        #: Counted by the data plane on every request (see RequestCounts).
        self.request_counts = RequestCounts()
        r.register(self.request_counts)
        self.invocation_errors = Counter(
            "edge_invocation_errors_total",
            "Failed invocations by function and reason (timeout, trap, memory, fuel, ...).",
            ["function", "reason"],
            registry=r,
        )
        self.cold_starts = Counter(
            "edge_cold_starts_total",
            "Instances created (a request that could not reuse a hot instance).",
            ["function"],
            registry=r,
        )
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
        self.cold_start_duration = Histogram(
            "edge_cold_start_duration_seconds",
            "Time to create an instance (instantiate from the compiled module), by function.",
            ["function"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.evictions = Counter(
            "edge_instance_evictions_total",
            "Instances dropped by cause: failure, recycle (served its quota), idle"
            " (idleTimeout), budget (memory budget needed room), preempted (an inline"
            " call re-run on a thread).",
            ["function", "cause"],
            registry=r,
        )
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
        self.worker_wait = Histogram(
            "edge_worker_wait_seconds",
            "Time calls waited for a worker thread, by function and lane (shared,"
            " quarantine); 0 for a call that found one free.",
            ["function", "lane"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.quarantines = Counter(
            "edge_quarantines_total",
            "Times a function was moved to the quarantine lane of worker threads.",
            ["function"],
            registry=r,
        )
        self.reloads = Counter(
            "edge_config_reloads_total",
            "Applications of a new desired configuration by result (ok, error).",
            ["result"],
            registry=r,
        )
