"""Graceful shutdown of a real runner process on SIGTERM (issue #4).

``/readyz`` fails first (the load balancer stops sending), in-flight requests
finish within the grace period, then the process exits 0; a guest still
running when the grace period ends cannot keep the process alive past its own
deadline.
"""

from __future__ import annotations

import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.guests import busy_wat, endless_wat, write_function
from support.runner import RunnerProcess, wait_until


def _busy(runner: RunnerProcess, name: str) -> int:
    pool = runner.functions()[name]["pool"]
    assert isinstance(pool, dict)
    return int(str(pool["busy"]))


def _exit_code(runner: RunnerProcess, timeout: float) -> int:
    assert runner.process is not None
    return runner.process.wait(timeout)


def test_sigterm_fails_readiness_first_then_drains_in_flight_requests(
    manifest_dir: Path,
) -> None:
    write_function(manifest_dir, "slow", busy_wat(1500), limits={"timeout": "5s"})
    runner = RunnerProcess(manifest_dir, extra_args=["--drain-delay", "0.5", "--grace", "5"])
    with runner, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.get, f"{runner.url}/slow", timeout=10)
        wait_until(lambda: _busy(runner, "slow") == 1, what="request in flight")
        assert runner.process is not None
        runner.process.send_signal(signal.SIGTERM)
        wait_until(lambda: runner.admin.get("/readyz").status_code == 503, what="unready")
        assert runner.admin.get("/readyz").json()["status"] == "shutting down"
        response = in_flight.result()
        assert response.status_code == 200 and response.text == "done"
        assert _exit_code(runner, timeout=10) == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{runner.url}/slow")
        assert "stopped" in runner.log()


def test_a_guest_running_past_the_grace_period_does_not_hold_the_process(
    manifest_dir: Path,
) -> None:
    write_function(manifest_dir, "endless", endless_wat(), limits={"timeout": "3s"})
    runner = RunnerProcess(manifest_dir, extra_args=["--grace", "1"])
    with runner, ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(httpx.get, f"{runner.url}/endless", timeout=10)
        wait_until(lambda: _busy(runner, "endless") == 1, what="request in flight")
        assert runner.process is not None
        started = time.monotonic()
        runner.process.send_signal(signal.SIGTERM)
        try:
            code = _exit_code(runner, timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the failure this test catches
            pytest.fail("the runner did not exit")
        assert code == 0
        assert time.monotonic() - started < 3 + 1.5  # the guest's own deadline bounds it
        cut = in_flight.result()
        assert cut.status_code == 503 and cut.headers["retry-after"] == "1"
        assert cut.json()["type"].endswith("/shutting-down")
