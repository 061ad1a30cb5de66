"""Counters and histograms kept in plain dictionaries, exported at scrape time.

Used by :mod:`edge_runner.metrics` for the series a runner has per request or
per function.  A ``prometheus_client`` child carries a lock and a value object
per bucket: about 6 KB for one function's histogram, 60 MB across 10,000
functions (bench/density.py), and a lock taken on every request.  Here a
series is one dictionary entry (a list of floats for a histogram).  The
exposition is the same: names, labels, bucket bounds (``le`` written as
``prometheus_client`` writes it) and cumulative counts; there is no
``_created`` sample.

Label values may be any objects (a status code as an int): they are turned
into strings at scrape time, not on the request path.  Without a ``lock`` only
one thread may update a metric (the event loop); with one, any thread may.  A
scrape (any thread) copies each dictionary first: a copy is atomic under the GIL.
``forget`` removes the series of a deleted function or route (called by the
thread that counts the unlocked ones, the event loop).
"""

from __future__ import annotations

import contextlib
import threading
from bisect import bisect_left
from collections.abc import Collection, Hashable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

Key = tuple[Hashable, ...]


def _forget(series: dict[Key, Any], lock: threading.Lock | None,
            first: Collection[Hashable]) -> None:
    """Drop the series whose first label value is in ``first``."""
    if not first:
        return
    with lock or contextlib.nullcontext():
        for key in [key for key in series if key[0] in first]:
            del series[key]


class PlainCounter(Collector):
    """A counter family: ``inc(key)`` where ``key`` holds one value per label."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 lock: threading.Lock | None = None) -> None:
        self.name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._lock = lock
        self.values: dict[Key, float] = {}

    def inc(self, key: Key, amount: float = 1) -> None:
        values = self.values
        if self._lock is None:
            values[key] = values.get(key, 0) + amount
            return
        with self._lock:
            values[key] = values.get(key, 0) + amount

    def forget(self, first: Collection[Hashable]) -> None:
        """Remove the series whose first label value is in ``first`` (a deleted function
        or route); counting one again starts it from zero."""
        _forget(self.values, self._lock, first)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self._documentation, labels=self._labels)
        for key, value in list(self.values.items()):
            family.add_metric([str(v) for v in key], value)
        yield family


class PlainHistogram(Collector):
    """A histogram family: ``observe(key, seconds)``; one list per series (a count per
    bucket, one for +Inf, then the sum)."""

    def __init__(self, name: str, documentation: str, labels: Sequence[str],
                 buckets: Sequence[float], lock: threading.Lock | None = None) -> None:
        self.name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._buckets = tuple(buckets)
        self._bounds = (*(floatToGoString(b) for b in buckets), "+Inf")  # type: ignore[no-untyped-call]
        self._lock = lock
        self.series: dict[Key, list[float]] = {}

    def observe(self, key: Key, value: float) -> None:
        if self._lock is None:
            self._observe(key, value)
            return
        with self._lock:
            self._observe(key, value)

    def forget(self, first: Collection[Hashable]) -> None:
        """As :meth:`PlainCounter.forget`."""
        _forget(self.series, self._lock, first)

    def _observe(self, key: Key, value: float) -> None:
        counts = self.series.get(key)
        if counts is None:
            counts = self.series[key] = [0.0] * (len(self._buckets) + 2)
        counts[bisect_left(self._buckets, value)] += 1
        counts[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self._documentation, labels=self._labels)
        for key, live in list(self.series.items()):
            counts = list(live)
            buckets: list[tuple[str, float]] = []
            total = 0.0
            for bound, in_bucket in zip(self._bounds, counts, strict=False):
                total += in_bucket
                buckets.append((bound, total))
            family.add_metric([str(v) for v in key], buckets, sum_value=counts[-1])
        yield family
