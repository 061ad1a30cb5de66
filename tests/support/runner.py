"""Start a real ``edge-runner`` process on loopback for tests and benchmarks.

:class:`RunnerProcess` picks free ports, runs ``edge-runner serve`` as a child
process, waits for ``/readyz`` (polling with a deadline, never a fixed sleep),
and stops it with SIGTERM.  :func:`wait_until` is the one polling helper tests
use to wait for a condition.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

import httpx

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    probe: Callable[[], T | None], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or probe}: {last_error}")


class RunnerProcess:
    """One ``edge-runner serve`` child process."""

    def __init__(
        self,
        manifests: Path | None,
        *,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.manifests = manifests
        self.port = free_port()
        self.admin_port = free_port()
        self.extra_args = list(extra_args)
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(tempfile.mkstemp(prefix="edge-runner-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.client = httpx.Client(base_url=self.url, timeout=10.0)
        self.admin = httpx.Client(base_url=self.admin_url, timeout=10.0)

    def start(self, *, wait_ready: bool = True) -> RunnerProcess:
        args = [
            sys.executable, "-m", "edge_runner", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--admin-host", "127.0.0.1", "--admin-port", str(self.admin_port),
            *self.extra_args,
        ]
        if self.manifests is not None:
            args += ["--manifests", str(self.manifests)]
        if "--cache-dir" not in self.extra_args:  # each runner its own disk cache
            args += ["--cache-dir", tempfile.mkdtemp(prefix="edge-cache-")]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO_ROOT
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        def ready() -> bool:
            self._check_alive()
            return self.admin.get("/readyz").status_code == 200

        wait_until(ready, timeout=timeout, what="runner /readyz")

    def _check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"runner exited with {self.process.returncode}:\n{self.log()[-4000:]}"
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def functions(self) -> dict[str, dict[str, object]]:
        body = self.admin.get("/v1/functions").json()
        return {item["name"]: item for item in body["functions"]}

    def metrics(self) -> str:
        return str(self.admin.get("/metrics").text)

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for exit; returns the exit code."""
        assert self.process is not None
        return stop_process(self.process, timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.terminate()
        self.client.close()
        self.admin.close()

    def __enter__(self) -> RunnerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    """SIGTERM, wait up to ``timeout``, then SIGKILL; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return int(process.returncode)


def metric_value(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = labels or {}
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, label_text = series.partition("{")
        if metric != name:
            continue
        found = dict(
            part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part
        )
        found = {k: v.strip('"') for k, v in found.items()}
        if all(found.get(k) == v for k, v in want.items()):
            return float(value)
    return 0.0
