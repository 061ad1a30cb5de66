"""Limits of spec.limits and spec.pool made real, against real runner processes (issue #4).

Time (epoch deadline, measured at the client), fuel (inline and threaded
paths), concurrency (per function and runner-wide, bounded queue, bounded
wait, 503 + Retry-After), the memory budget against a fake cgroup, idle
expiry, and retries only where no guest code ran.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from edge_runner.invoke.catalog import FUNCTION_BYTES
from support import guests
from support.guests import write_function
from support.runner import RunnerProcess, metric_value, wait_until

MiB = 2**20
#: --max-wait of the queueing tests, and the slack allowed on top of it (docs/http.md:
#: 503 ``concurrency`` once no slot freed up within it).
MAX_WAIT = 0.5
MARGIN = 0.3


def _timed_get(url: str) -> tuple[float, httpx.Response]:
    """GET ``url`` on a connection made beforehand; returns (seconds, response)."""
    with httpx.Client(timeout=10.0) as client:  # not timed: building a client takes ~40 ms
        client.get(url.rsplit("/", 1)[0] + "/__warm__")
        started = time.perf_counter()
        response = client.get(url)
        return time.perf_counter() - started, response


def _pool(runner: RunnerProcess, name: str) -> dict[str, object]:
    pool = runner.functions()[name]["pool"]
    assert isinstance(pool, dict)
    return pool


def _instances_reserved(runner: RunnerProcess) -> float:
    """The budget's ``reserved`` less what it also counts (docs/metrics.md): the compiled
    modules, and the bookkeeping of each function served."""
    described = runner.admin.get("/v1/functions").json()
    modules = float(described["modules"]["loadedBytes"])
    served = sum(f["state"] == "ready" for f in described["functions"])
    reserved = metric_value(runner.metrics(), "edge_memory_budget_bytes", {"kind": "reserved"})
    return reserved - modules - float(served * FUNCTION_BYTES)


@pytest.mark.slow
def test_timeouts_are_enforced_within_ten_percent_or_20ms(manifest_dir: Path) -> None:
    requested = {"t50": 0.05, "t200": 0.2, "t1000": 1.0}
    for name, seconds in requested.items():
        write_function(manifest_dir, name, guests.endless_wat(),
                       limits={"timeout": f"{int(seconds * 1000)}ms"})
    with RunnerProcess(manifest_dir) as runner:
        for name, seconds in requested.items():
            samples = []
            for _ in range(5):
                elapsed, response = _timed_get(f"{runner.url}/{name}")
                assert response.status_code == 504
                assert response.json()["type"].endswith("/timeout")
                samples.append(elapsed)
            # Never early; and the best sample (scheduling noise of a shared machine only
            # ever adds time) within the bound.  bench/hostile.py reports the spread.
            assert min(samples) >= seconds, (name, samples)
            assert min(samples) <= seconds + max(0.1 * seconds, 0.02), (name, samples)


def test_fuel_limit_on_the_inline_and_the_threaded_path(manifest_dir: Path) -> None:
    # 100k < the inline budget (runs inline with its own fuel); 5M > it (rerun on a thread).
    write_function(manifest_dir, "small", guests.endless_wat(), limits={"fuel": 100_000})
    write_function(manifest_dir, "large", guests.endless_wat(), limits={"fuel": 5_000_000})
    with RunnerProcess(manifest_dir) as runner:
        for name in ("small", "large"):
            response = runner.client.get(f"/{name}")
            assert response.status_code == 504
            assert response.json()["type"].endswith("/fuel")
        text = runner.metrics()
        # small failed on the event loop itself; large was stopped there at the inline
        # budget (not a failure) and ran out of its own fuel on a thread.
        preempted = {name: metric_value(text, "edge_instance_evictions_total",
                                        {"function": name, "cause": "preempted"})
                     for name in ("small", "large")}
        assert preempted == {"small": 0, "large": 1}
        for name in ("small", "large"):
            assert metric_value(text, "edge_invocation_errors_total",
                                {"function": name, "reason": "fuel"}) == 1
            assert _pool(runner, name)["inline"] is False  # a failure or the budget: threads


def test_a_guest_computing_on_the_event_loop_moves_to_threads_at_once(
    manifest_dir: Path,
) -> None:
    # CPU time on the loop thread for little fuel: stopped by the time cap, and one
    # call is proof enough (a call only descheduled that long would need three in a row).
    write_function(manifest_dir, "spin", guests.random_wat(128, 100))
    with RunnerProcess(manifest_dir) as runner:
        assert runner.client.get("/spin").text == "filled"
        assert _pool(runner, "spin")["inline"] is False
        assert _pool(runner, "spin")["demotions"] == 1
        assert "spin runs on worker threads for 5s: an inline call ran its time cap" \
            in runner.log()
        assert metric_value(runner.metrics(), "edge_instance_evictions_total",
                            {"function": "spin", "cause": "preempted"}) == 1


def test_a_function_whose_inline_call_failed_runs_on_threads(manifest_dir: Path) -> None:
    write_function(manifest_dir, "trap", guests.trap_wat())
    write_function(manifest_dir, "healthy", guests.constant_wat(b"fine"))
    with RunnerProcess(manifest_dir) as runner:
        assert _pool(runner, "trap")["inline"] is True
        for _ in range(3):
            assert runner.client.get("/trap").status_code == 502
        assert _pool(runner, "trap")["inline"] is False
        assert _pool(runner, "trap")["demotions"] == 1  # by the first call
        assert "trap runs on worker threads for 5s: its call failed" in runner.log()
        assert runner.client.get("/healthy").text == "fine"
        assert _pool(runner, "healthy")["inline"] is True
        text = runner.metrics()
        assert metric_value(text, "edge_instance_evictions_total",
                            {"function": "trap", "cause": "failure"}) == 3
        assert metric_value(text, "edge_instance_evictions_total",
                            {"function": "trap", "cause": "preempted"}) == 0


def test_endless_guests_do_not_stall_other_functions(manifest_dir: Path) -> None:
    write_function(manifest_dir, "endless", guests.endless_wat(), limits={"timeout": "2s"},
                   pool={"maxInstances": 4})
    write_function(manifest_dir, "healthy", guests.constant_wat(b"fine"))
    threads = ["--max-concurrency", "8"]  # more endless guests than this VM has CPUs
    with RunnerProcess(manifest_dir, extra_args=threads) as runner, ThreadPoolExecutor(4) as pool:
        stuck = [pool.submit(_timed_get, f"{runner.url}/endless") for _ in range(3)]
        wait_until(lambda: _pool(runner, "endless")["busy"] == 3, what="3 endless guests")
        latencies = []
        while not all(f.done() for f in stuck):
            started = time.perf_counter()
            assert runner.client.get("/healthy").text == "fine"
            latencies.append(time.perf_counter() - started)
        assert all(f.result()[1].status_code == 504 for f in stuck)
        assert len(latencies) > 20
        # A loop the guests blocked would show a stall of their timeout (2 s), or one
        # per guest; one scheduling hiccup of a shared machine (seen once in CI, 149 ms
        # among hundreds of samples under 11 ms) is not the runner's.
        slowest = sorted(latencies)[-5:]
        assert slowest[-2] < 0.1 and slowest[-1] < 1.0, slowest


def test_per_function_cap_queues_then_answers_503(manifest_dir: Path) -> None:
    write_function(manifest_dir, "slow", guests.busy_wat(1500), limits={"timeout": "5s"},
                   pool={"maxInstances": 1})
    args = ["--max-waiting", "1", "--max-wait", str(MAX_WAIT)]
    with RunnerProcess(manifest_dir, extra_args=args) as runner, ThreadPoolExecutor(2) as pool:
        first = pool.submit(_timed_get, f"{runner.url}/slow")
        wait_until(lambda: _pool(runner, "slow")["busy"] == 1, what="first request running")
        queued = pool.submit(_timed_get, f"{runner.url}/slow")
        wait_until(lambda: _pool(runner, "slow")["waiting"] == 1, what="second request queued")
        elapsed, full = _timed_get(f"{runner.url}/slow")  # the queue (1) is full: at once
        assert full.status_code == 503 and elapsed < 0.25
        waited, timed_out = queued.result()
        assert timed_out.status_code == 503 and MAX_WAIT <= waited < MAX_WAIT + MARGIN, waited
        for response in (full, timed_out):
            assert response.headers["retry-after"] == "1"
            assert response.json()["type"].endswith("/concurrency")
        assert first.result()[1].text == "done"
        assert metric_value(runner.metrics(), "edge_invocation_errors_total",
                            {"function": "slow", "reason": "concurrency"}) == 2


def test_runner_wide_thread_cap_still_serves_inline_functions(manifest_dir: Path) -> None:
    for name in ("spin-a", "spin-b"):
        write_function(manifest_dir, name, guests.endless_wat(), limits={"timeout": "2s"})
    write_function(manifest_dir, "slow", guests.busy_wat(100))
    write_function(manifest_dir, "healthy", guests.constant_wat(b"fine"))
    args = ["--max-concurrency", "2", "--max-wait", str(MAX_WAIT)]
    with RunnerProcess(manifest_dir, extra_args=args) as runner, ThreadPoolExecutor(2) as pool:
        spinning = [pool.submit(_timed_get, f"{runner.url}/{n}") for n in ("spin-a", "spin-b")]
        # Busy seen from the admin plane means past the inline attempt (same event loop).
        wait_until(lambda: all(_pool(runner, n)["busy"] == 1 for n in ("spin-a", "spin-b")),
                   what="both threads busy")
        elapsed, refused = _timed_get(f"{runner.url}/slow")
        assert refused.status_code == 503 and MAX_WAIT <= elapsed < MAX_WAIT + MARGIN, elapsed
        assert "worker threads" in refused.json()["detail"]
        assert runner.client.get("/healthy").text == "fine"  # inline: needs no thread
        assert [f.result()[1].status_code for f in spinning] == [504, 504]
        assert runner.client.get("/slow").text == "done"


@pytest.fixture
def fake_cgroup(tmp_path: Path) -> Path:
    root = tmp_path / "cgroup"
    root.mkdir()
    (root / "memory.max").write_text(f"{1024 * MiB}\n")
    return root


def test_memory_budget_refuses_instances_that_do_not_fit(
    manifest_dir: Path, fake_cgroup: Path
) -> None:
    # usable = 0.8 x 1 GiB - baseline (~0.1 GiB): two 300 MiB instances fit, three do not.
    write_function(manifest_dir, "big", guests.busy_wat(1500),
                   limits={"memory": "300Mi", "timeout": "5s"}, pool={"maxInstances": 4})
    write_function(manifest_dir, "other", guests.constant_wat(b"fine"),
                   limits={"memory": "300Mi"})
    env = {"EDGE_RUNNER_CGROUP_ROOT": str(fake_cgroup)}
    threads = ["--max-concurrency", "8"]  # the budget refuses, not the thread gate
    with RunnerProcess(manifest_dir, env=env, extra_args=threads) as runner, \
            ThreadPoolExecutor(2) as pool:
        text = runner.metrics()
        assert metric_value(text, "edge_memory_budget_bytes", {"kind": "limit"}) == 1024 * MiB
        baseline = metric_value(text, "edge_memory_budget_bytes", {"kind": "baseline"})
        assert 0 < baseline < 200 * MiB
        running = [pool.submit(_timed_get, f"{runner.url}/big") for _ in range(2)]
        wait_until(lambda: _instances_reserved(runner) == 600 * MiB
                   and _pool(runner, "big")["busy"] == 2, what="two instances reserved")
        refused = runner.client.get("/big")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["type"].endswith("/memory-budget")
        assert [f.result()[1].text for f in running] == ["done", "done"]
        # Kept warm; idle, they cannot grow, so they keep only what they hold reserved.
        assert _pool(runner, "big")["idle"] == 2
        assert _instances_reserved(runner) == 2 * 4 * 65536
        assert runner.client.get("/other").text == "fine"
        assert _pool(runner, "big")["evicted"] == 0
        assert metric_value(runner.metrics(), "edge_invocation_errors_total",
                            {"function": "big", "reason": "memory_budget"}) == 1
        assert f"from {fake_cgroup / 'memory.max'}" in runner.log()


def test_idle_instances_expire_after_idle_timeout(manifest_dir: Path) -> None:
    write_function(manifest_dir, "warm", guests.counter_wat(),
                   pool={"reuse": True, "idleTimeout": "1s"})
    with RunnerProcess(manifest_dir, extra_args=["--memory-limit", "1Gi"]) as runner:
        runner.client.get("/warm")
        assert _pool(runner, "warm")["idle"] == 1
        assert _instances_reserved(runner) == 4 * 65536  # idle: what it holds, not its limit
        wait_until(lambda: _pool(runner, "warm")["idle"] == 0, timeout=5, what="expiry")
        assert _instances_reserved(runner) == 0
        assert runner.client.get("/warm").content == (1).to_bytes(4, "little")  # fresh instance


def test_retries_only_idempotent_requests_whose_guest_never_started(manifest_dir: Path) -> None:
    # A table over the store's element limit: wasmtime refuses the instance, no guest code runs.
    refused = guests.constant_wat(b"never", extra="(table 200000 funcref)")
    write_function(manifest_dir, "refused", refused, path_type="Prefix")
    write_function(manifest_dir, "trap", guests.trap_wat())
    with RunnerProcess(manifest_dir) as runner:
        requests = {"get-1": ("GET", "/refused"), "post-1": ("POST", "/refused"),
                    "trap-1": ("GET", "/trap")}
        for request_id, (method, path) in requests.items():
            response = runner.client.request(method, path, headers={"x-request-id": request_id})
            assert response.status_code == 502
        entries = [json.loads(line) for line in runner.log().splitlines() if line.startswith("{")]
        retried = [e["request_id"] for e in entries if e["message"].startswith("retrying")]
        assert retried == ["get-1"]
        assert runner.client.get("/refused").json()["type"].endswith("/instantiate")
