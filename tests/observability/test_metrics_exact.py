"""A scripted workload against a real runner, then exact counter values from /metrics."""

from __future__ import annotations

from pathlib import Path

from support.guests import constant_wat, trap_wat, write_function
from support.runner import RunnerProcess, metric_value


def test_exact_counters_after_a_scripted_workload(manifest_dir: Path) -> None:
    write_function(manifest_dir, "alpha", constant_wat(b"a"))
    write_function(manifest_dir, "beta", trap_wat())
    with RunnerProcess(manifest_dir) as runner:
        for _ in range(7):
            assert runner.client.get("/alpha").status_code == 200
        for _ in range(3):
            assert runner.client.get("/beta").status_code == 502
        for _ in range(2):
            assert runner.client.get("/missing").status_code == 404
        text = runner.metrics()

    def value(name: str, **labels: str) -> float:
        return metric_value(text, name, labels)

    assert value("edge_requests_total", function="alpha", code="200") == 7
    assert value("edge_requests_total", function="beta", code="502") == 3
    assert value("edge_requests_total", function="", code="404") == 2
    assert value("edge_request_duration_seconds_count", function="alpha") == 7
    assert value("edge_invocation_errors_total", function="beta", reason="trap") == 3
    assert value("edge_route_lookups_total", result="match") == 10
    assert value("edge_route_lookups_total", result="not_found") == 2
    assert value("edge_route_requests_total", route="alpha", rule="0") == 7
    # alpha reuses one hot instance; every failed beta instance is discarded.
    assert value("edge_cold_starts_total", function="alpha") == 1
    assert value("edge_cold_starts_total", function="beta") == 3
    assert value("edge_functions", state="ready") == 2
    # beta failed inline first, then on worker threads: two calls waited for a thread of
    # the shared lane, and its third failure quarantined it (docs/scheduling.md).
    assert value("edge_worker_wait_seconds_count", function="beta", lane="shared") == 2
    assert value("edge_worker_wait_seconds_count", function="alpha", lane="shared") == 0
    assert value("edge_quarantines_total", function="beta") == 1
    assert value("edge_function_quarantined", function="beta") == 1
    assert value("edge_function_quarantined", function="alpha") == 0
    # Labels stay bounded: no path or request id ever becomes a label value.
    assert "/missing" not in text
