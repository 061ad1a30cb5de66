"""Plain-dictionary metrics (edge_runner.plainmetrics) expose exactly what
prometheus_client's own counters and histograms expose for the same updates (but
no ``_created``), and a locked one loses no update from concurrent threads."""

from __future__ import annotations

import sys
import threading

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from edge_runner.metrics import LATENCY_BUCKETS
from edge_runner.plainmetrics import PlainCounter, PlainHistogram

LABELS = st.sampled_from(["a", "b", "é\"quoted\\"])
UPDATES = st.lists(st.tuples(LABELS, st.integers(100, 599),
                             st.floats(0, 20, allow_nan=False)), max_size=40)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line]


@given(UPDATES)
def test_the_exposition_is_prometheus_clients(updates: list[tuple[str, int, float]]) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    counter = Counter("x_requests_total", "Requests.", ["function", "code"], registry=theirs)
    histogram = Histogram("x_seconds", "Seconds.", ["function"], buckets=LATENCY_BUCKETS,
                          registry=theirs)
    plain_counter = PlainCounter("x_requests_total", "Requests.", ["function", "code"])
    plain_histogram = PlainHistogram("x_seconds", "Seconds.", ["function"], LATENCY_BUCKETS)
    ours.register(plain_counter)
    ours.register(plain_histogram)
    for function, code, seconds in updates:
        counter.labels(function, str(code)).inc()
        histogram.labels(function).observe(seconds)
        plain_counter.inc((function, code))
        plain_histogram.observe((function,), seconds)
    assert sorted(_exposition(ours)) == sorted(_exposition(theirs))


def test_a_locked_counter_loses_no_update_across_threads() -> None:
    """(Without the lock, a switch interval of 1 us loses about a third of them.)"""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _count_from_threads()
    finally:
        sys.setswitchinterval(interval)


def _count_from_threads() -> None:
    counter = PlainCounter("x_total", "X.", ["function"], threading.Lock())
    histogram = PlainHistogram("x_seconds", "X.", ["function"], (1.0,), threading.Lock())
    switches = threading.Barrier(8)

    def work() -> None:
        switches.wait()
        for _ in range(20_000):
            counter.inc(("f",))
            histogram.observe(("f",), 0.5)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counter.values[("f",)] == 160_000
    assert histogram.series[("f",)][:2] == [160_000, 0]
