"""A real Prometheus server (Debian's) scrapes a runner; its HTTP API shows the series."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.runner import RunnerProcess, free_port, wait_until


@pytest.fixture
def prometheus(tmp_path: Path, samples_runner: RunnerProcess) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (make apt-deps installs Debian's package)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: edge-runner
    static_configs: [{{targets: ["127.0.0.1:{samples_runner.admin_port}"]}}]
""")
    with (tmp_path / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{url}/-/ready").status_code == 200, timeout=30,
                   what="prometheus ready")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def test_prometheus_scrapes_runner_series(prometheus: str, samples_runner: RunnerProcess) -> None:
    for _ in range(5):
        assert samples_runner.client.get("/hello").status_code == 200

    def series() -> list[dict[str, object]] | None:
        response = httpx.get(f"{prometheus}/api/v1/query", params={
            "query": 'edge_requests_total{function="hello-world",code="200"}'})
        result = response.json()["data"]["result"]
        return result if result and float(result[0]["value"][1]) >= 5 else None

    result = wait_until(series, timeout=30, what="series scraped")
    assert result[0]["metric"]["job"] == "edge-runner"  # type: ignore[index]
    targets = httpx.get(f"{prometheus}/api/v1/targets").json()["data"]["activeTargets"]
    assert targets[0]["health"] == "up"
