"""Structured JSON logs: one access line per request; every record about a request
(failure, guest output) carries its request id (docs/http.md, docs/abi.md)."""

from __future__ import annotations

import json
from pathlib import Path

from support.guests import constant_wat, output_flood_wat, trap_wat, write_function
from support.runner import RunnerProcess, wait_until


def _lines(runner: RunnerProcess) -> list[dict[str, object]]:
    entries = []
    for line in runner.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def _workload(runner: RunnerProcess) -> None:
    assert runner.client.get("/fine", headers={"x-request-id": "req-1"}).status_code == 200
    assert runner.client.get("/broken", headers={"x-request-id": "req-2"}).status_code == 502
    assert runner.client.get("/nowhere", headers={"x-request-id": "req-3"}).status_code == 404
    assert runner.client.get("/chatty", headers={"x-request-id": "req-4"}).status_code == 200


def _functions(folder: Path) -> Path:
    write_function(folder, "fine", constant_wat(b"ok"))
    write_function(folder, "broken", trap_wat())
    write_function(folder, "chatty", output_flood_wat(chunks=1))  # 16 KiB of "A" to stdout
    return folder


def test_access_log_lines_are_structured(manifest_dir: Path) -> None:
    with RunnerProcess(_functions(manifest_dir)) as runner:
        _workload(runner)

        def access() -> dict[str, dict[str, object]] | None:
            found = {str(e["request_id"]): e for e in _lines(runner)
                     if e["logger"] == "edge_runner.access"}
            return found if len(found) == 4 else None

        lines = wait_until(access, what="four access lines")
    fine, broken, nowhere = lines["req-1"], lines["req-2"], lines["req-3"]
    assert fine["function"] == "fine" and fine["route"] == "fine/0"
    assert fine["status"] == 200 and fine["outcome"] == "ok"
    assert isinstance(fine["duration_ms"], float)
    assert broken["status"] == 502 and broken["outcome"] == "trap"
    assert nowhere["status"] == 404 and nowhere["outcome"] == "no-route"
    assert nowhere["function"] == "" and nowhere["route"] == ""
    # Other records about a request carry its id and function too.
    entries = _lines(runner)
    failure = {(e["logger"], str(e["message"]).split(":")[0], e["function"]) for e in entries
               if e.get("request_id") == "req-2" and e["level"] == "warning"}
    assert failure == {("edge_runner.guest", "guest trap", "broken"),
                       ("edge_runner.http.dataplane", "invocation failed", "broken")}
    output = [e for e in entries if e["message"] == "guest output"]
    assert [(e["request_id"], e["function"], e["guest_output"], e["guest_output_dropped"])
            for e in output] == [("req-4", "chatty", "A" * 4096, 16384 - 4096)]


def test_batched_access_lines_are_all_written_on_shutdown(manifest_dir: Path) -> None:
    """With batches an hour apart, the 300 lines of 300 requests wait in memory: SIGTERM
    must write every one of them (and no line before it: they were batched)."""
    write_function(manifest_dir, "fine", constant_wat(b"ok"))
    with RunnerProcess(manifest_dir, extra_args=["--access-log-interval", "3600"]) as runner:
        for i in range(300):
            assert runner.client.get("/fine", headers={"x-request-id": f"r{i}"}).text == "ok"
        assert not [e for e in _lines(runner) if e["logger"] == "edge_runner.access"]
        assert runner.terminate() == 0
        ids = [e["request_id"] for e in _lines(runner) if e["logger"] == "edge_runner.access"]
    assert ids == [f"r{i}" for i in range(300)]


def test_below_info_only_warnings_and_errors_are_logged(manifest_dir: Path) -> None:
    with RunnerProcess(_functions(manifest_dir), extra_args=["--log-level", "warning"]
                       ) as runner:
        _workload(runner)
        # The failure is still logged (the log works, at its level) ...
        wait_until(lambda: any(e.get("request_id") == "req-2" for e in _lines(runner)),
                   what="the warning about req-2")
    entries = _lines(runner)
    assert {e["level"] for e in entries} <= {"warning", "error"}, entries
    assert {e["request_id"] for e in entries if "request_id" in e} == {"req-2"}
    # ... but neither access lines nor guest output (INFO).
    assert not [e for e in entries
                if e["logger"] == "edge_runner.access" or e["message"] == "guest output"]
