"""Structured JSON logs: one access line per request, tagged guest output."""

from __future__ import annotations

import json
from pathlib import Path

from support.guests import constant_wat, trap_wat, write_function
from support.runner import RunnerProcess, wait_until


def _lines(runner: RunnerProcess) -> list[dict[str, object]]:
    entries = []
    for line in runner.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def test_access_log_lines_are_structured(manifest_dir: Path) -> None:
    write_function(manifest_dir, "fine", constant_wat(b"ok"))
    write_function(manifest_dir, "broken", trap_wat())
    with RunnerProcess(manifest_dir) as runner:
        runner.client.get("/fine", headers={"x-request-id": "req-1"})
        runner.client.get("/broken", headers={"x-request-id": "req-2"})
        runner.client.get("/nowhere", headers={"x-request-id": "req-3"})

        def access() -> dict[str, dict[str, object]] | None:
            found = {str(e["request_id"]): e for e in _lines(runner)
                     if e["logger"] == "edge_runner.access"}
            return found if len(found) == 3 else None

        lines = wait_until(access, what="three access lines")
    fine, broken, nowhere = lines["req-1"], lines["req-2"], lines["req-3"]
    assert fine["function"] == "fine" and fine["route"] == "fine/0"
    assert fine["status"] == 200 and fine["outcome"] == "ok"
    assert isinstance(fine["duration_ms"], float)
    assert broken["status"] == 502 and broken["outcome"] == "trap"
    assert nowhere["status"] == 404 and nowhere["outcome"] == "no-route"
    assert nowhere["function"] == "" and nowhere["route"] == ""


def test_access_log_is_off_below_info(manifest_dir: Path) -> None:
    write_function(manifest_dir, "quiet", constant_wat(b"ok"))
    with RunnerProcess(manifest_dir, extra_args=["--log-level", "warning"]) as runner:
        assert runner.client.get("/quiet").status_code == 200
        assert runner.client.get("/nowhere").status_code == 404
    assert not [e for e in _lines(runner) if e["logger"] == "edge_runner.access"]
