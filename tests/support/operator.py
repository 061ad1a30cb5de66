"""Start a real ``edge-operator`` process against a test cluster.

:class:`OperatorProcess` runs ``python -m edge_operator`` for one namespace with
the cluster's kubeconfig, waits for kopf's liveness endpoint and stops it with
SIGTERM.  Its log is kept for assertions and failure messages.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

import httpx

from support.runner import REPO_ROOT, free_port, stop_process, wait_until


class OperatorProcess:
    def __init__(self, namespace: str, env: dict[str, str]) -> None:
        self.namespace = namespace
        self.env = env
        self.metrics_port = free_port()
        self.health_port = free_port()
        self.log_path = Path(tempfile.mkstemp(prefix="edge-operator-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge_operator", "--namespace", self.namespace,
                 "--metrics-port", str(self.metrics_port), "--health-port", str(self.health_port),
                 "--log-format", "text"],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=REPO_ROOT,
            )

        def healthy() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"operator exited:\n{self.log()[-4000:]}")
            return httpx.get(f"http://127.0.0.1:{self.health_port}/healthz").status_code == 200

        wait_until(healthy, timeout=60, what="operator liveness")
        return self

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics").text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
