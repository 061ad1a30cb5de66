"""Alert rules pass promtool (syntax and unit tests); dashboard and alerts query only
metrics that the runner or the operator really export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from edge_operator.metrics import OperatorMetrics
from support.runner import REPO_ROOT, RunnerProcess

FILES = REPO_ROOT / "charts" / "edge-runner" / "files"
HERE = Path(__file__).parent
_HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
# Series Prometheus makes itself, not exported by us.
_BUILTIN = {"up"}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing (make apt-deps installs Debian's prometheus package)")
    return binary


def test_rules_are_valid() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(FILES / "alerts.yaml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


def test_rules_unit_tests() -> None:
    result = subprocess.run([promtool(), "test", "rules", "alerts_test.yaml"], cwd=HERE,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _families(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names.update(name + s for s in _HISTOGRAM_SUFFIXES)
            if kind == "counter" and not name.endswith("_total"):
                names.add(name + "_total")
    return names


def _queried(expressions: list[str]) -> set[str]:
    found = set()
    for expr in expressions:
        without_strings = re.sub(r'"[^"]*"', '""', expr)
        found.update(re.findall(r"\b(edge_[a-z0-9_]+|up)\b", without_strings))
    return found


def test_dashboard_and_alerts_query_exported_metrics(samples_runner: RunnerProcess) -> None:
    dashboard = json.loads((FILES / "dashboard.json").read_text())
    assert dashboard["uid"] and dashboard["panels"]
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = yaml.safe_load((FILES / "alerts.yaml").read_text())
    expressions += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    exported = _families(samples_runner.metrics())
    exported |= _families(generate_latest(OperatorMetrics().registry).decode())
    queried = _queried(expressions)
    assert len(queried) >= 12
    assert queried - exported - _BUILTIN == set()
    panel_ids = [p["id"] for p in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
