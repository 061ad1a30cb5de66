"""A runner process reports whether it runs compiled: the same modules it loaded.

`make test` runs this file twice: as Python (0 modules compiled), and with
PYTHONPATH on the compiled build of ``make compiled`` (every module of
``edge_runner.buildinfo.COMPILED``).  The runner inherits this process's
environment, so both load the same build.
"""

from __future__ import annotations

import edge_runner.http.dataplane
from edge_runner.buildinfo import COMPILED
from support.runner import RunnerProcess, metric_value


def test_the_runner_logs_and_exports_what_runs_compiled(samples_runner: RunnerProcess) -> None:
    compiled_here = not str(edge_runner.http.dataplane.__file__).endswith(".py")
    expected = len(COMPILED) if compiled_here else 0
    assert metric_value(samples_runner.metrics(), "edge_compiled_modules") == expected
    line = f"{expected} modules compiled (mypyc)" if expected else "data plane: pure Python"
    assert line in samples_runner.log()
