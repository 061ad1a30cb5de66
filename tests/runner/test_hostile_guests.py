"""Hostile guests against one real runner process (issue #4, R5, R9 WASI sandbox).

Every module of the corpus in :mod:`support.guests` gets its documented status
(docs/http.md) with problem+json and a ``reason`` metric, the failed
instance is discarded, and a healthy function on the same runner keeps
answering.  The sandbox cases check what a guest can see: only ``spec.env``,
no files, no sockets, no imports beyond its ABI, bounded output in the log.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from support import guests
from support.guests import write_function
from support.runner import RunnerProcess, metric_value, wait_until


@dataclass(frozen=True)
class Case:
    name: str
    wat: str
    status: int
    reason: str
    limits: dict[str, object] = field(default_factory=dict)
    abi: str = "edge"


WAGI_BOMB = """(block $refused (loop $grow
      (br_if $refused (i32.eq (memory.grow (i32.const 16)) (i32.const -1))) (br $grow)))
    unreachable"""
WAGI_FLOOD = f"""(local $left i32) (local.set $left (i32.const 100))
    (loop $more {guests.wagi_ok_body()}
      (local.set $left (i32.sub (local.get $left) (i32.const 1)))
      (br_if $more (local.get $left)))"""

CASES = [
    Case("endless", guests.endless_wat(), 504, "timeout", {"timeout": "200ms"}),
    Case("fuel", guests.endless_wat(), 504, "fuel", {"fuel": 100_000}),
    Case("bomb", guests.memory_bomb_wat(), 502, "memory", {"memory": "2Mi"}),
    Case("bomb-handled", guests.memory_bomb_wat(abort=False), 502, "memory", {"memory": "2Mi"}),
    Case("big-grow", guests.big_grow_wat(), 502, "memory"),
    Case("big-initial-memory", guests.big_memory_wat(2000), 502, "memory"),
    Case("recursion", guests.recursion_wat(), 502, "stack_overflow"),
    Case("trap", guests.trap_wat(), 502, "trap"),
    Case("oob-load", guests.oob_load_wat(), 502, "trap"),
    Case("table-bomb", guests.table_bomb_wat(), 502, "trap"),
    Case("giant-response", guests.giant_response_wat(), 502, "response_too_large"),
    Case("outside-response", guests.outside_response_wat(), 502, "bad_response"),
    Case("bad-header", guests.bad_header_wat(), 502, "bad_response"),
    Case("init-trap", guests.init_trap_wat(), 502, "instantiate"),
    Case("wagi-exit", guests.wagi_wat("(call $exit (i32.const 3))"), 502, "exit", abi="wagi"),
    Case("wagi-endless", guests.wagi_wat("(loop $l (br $l))"), 504, "timeout",
         {"timeout": "200ms"}, abi="wagi"),
    Case("wagi-bomb", guests.wagi_wat(WAGI_BOMB), 502, "memory", {"memory": "2Mi"}, abi="wagi"),
    Case("wagi-flood", guests.wagi_wat(WAGI_FLOOD), 502, "response_too_large",
         {"maxResponseBytes": "1Ki"}, abi="wagi"),
]

NEVER_INSTANTIATED = frozenset({"init-trap", "big-initial-memory"})

FORBIDDEN = {
    "import-env": ("env", "steal", "(func)"),
    "import-unstable": ("wasi_unstable", "fd_write", "(func (param i32 i32 i32 i32) (result i32))"),
    "import-unknown-wasi": (guests.WASI, "sock_open", "(func (param i32) (result i32))"),
    "import-wrong-type": (guests.WASI, "fd_write", "(func (param i64))"),
}


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunnerProcess]:
    folder = tmp_path_factory.mktemp("hostile")
    write_function(folder, "healthy", guests.constant_wat(b"fine"))
    for case in CASES:
        write_function(folder, case.name, case.wat, limits=case.limits, abi=case.abi)
    for name, (module, field_name, signature) in FORBIDDEN.items():
        write_function(folder, name, guests.importer_wat(module, field_name, signature))
    write_function(folder, "env-probe", guests.env_probe_wat())
    _set_env(folder / "env-probe.yaml", [{"name": "GREETING", "value": "hi"}])
    write_function(folder, "fs-probe", guests.fs_probe_wat())
    write_function(folder, "flood", guests.output_flood_wat())
    write_function(folder, "flood-heavy", guests.output_flood_wat(chunks=256))
    with RunnerProcess(folder, env={"RUNNER_SECRET": "do-not-leak"}) as process:
        yield process


def _set_env(manifest: Path, env: list[dict[str, str]]) -> None:
    import yaml

    documents = list(yaml.safe_load_all(manifest.read_text()))
    documents[0]["spec"]["env"] = env
    manifest.write_text(yaml.safe_dump_all(documents))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_guest_gets_its_documented_status(runner: RunnerProcess, case: Case) -> None:
    response = runner.client.get(f"/{case.name}")
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith("/" + case.reason.replace("_", "-"))
    assert problem["function"] == case.name
    assert problem["request_id"] == response.headers["x-request-id"]
    assert metric_value(runner.metrics(), "edge_invocation_errors_total",
                        {"function": case.name, "reason": case.reason}) >= 1
    assert runner.client.get("/healthy").text == "fine"
    assert runner.alive()
    pool = runner.functions()[case.name]["pool"]
    assert isinstance(pool, dict)
    assert pool["idle"] == 0  # a failed instance is never kept
    if case.abi == "edge" and case.name not in NEVER_INSTANTIATED:
        assert pool["discarded"] >= 1


def test_a_trap_logs_a_bounded_guest_backtrace(runner: RunnerProcess) -> None:
    request_id = "trace-me-1"
    runner.client.get("/recursion", headers={"x-request-id": request_id})
    entries = [json.loads(line) for line in runner.log().splitlines() if request_id in line]
    traps = [e for e in entries if e["message"] == "guest trap"]
    assert traps, entries
    assert traps[0]["function"] == "recursion"
    assert "wasm backtrace" in traps[0]["backtrace"]
    assert 0 < len(traps[0]["backtrace"]) <= 2048


@pytest.mark.parametrize("name", sorted(FORBIDDEN))
def test_forbidden_imports_are_refused_at_load_naming_the_import(
    runner: RunnerProcess, name: str
) -> None:
    module, field_name, _ = FORBIDDEN[name]
    state = runner.functions()[name]
    assert state["state"] == "error"
    assert f"{module}" in str(state["error"]) and field_name in str(state["error"])
    response = runner.client.get(f"/{name}")
    assert response.status_code == 503
    assert response.headers["retry-after"]


def test_the_guest_sees_only_its_spec_env(runner: RunnerProcess) -> None:
    response = runner.client.get("/env-probe")
    assert response.status_code == 200
    assert response.content == b"GREETING=hi\x00"


def test_the_guest_has_no_files_and_no_sockets(runner: RunnerProcess) -> None:
    response = runner.client.get("/fs-probe")
    assert response.status_code == 200
    errnos = [int.from_bytes(response.content[i:i + 4], "little") for i in (0, 4, 8)]
    assert errnos == [guests.ERRNO_BADF] * 3  # prestat, path_open, sock_accept on fd 3


def test_guest_output_is_logged_bounded_and_tagged(runner: RunnerProcess) -> None:
    request_id = "flood-1"
    response = runner.client.get("/flood", headers={"x-request-id": request_id})
    assert response.text == "ok"
    entries = [json.loads(line) for line in runner.log().splitlines()
               if request_id in line and "guest_output" in line]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["function"] == "flood"
    assert entry["guest_output"] == "A" * 4096
    assert entry["guest_output_dropped"] == 64 * 16384 - 4096


def test_a_guest_flooding_output_on_the_event_loop_moves_to_threads(runner: RunnerProcess) -> None:
    # Output costs fuel (edge_runner.wasm.wasi_output): 256 writes are more than the inline
    # budget, so the first call runs out of it and the function moves to threads.
    def demoted() -> bool:
        assert runner.client.get("/flood-heavy").text == "ok"
        pool = runner.functions()["flood-heavy"]["pool"]
        assert isinstance(pool, dict)
        return pool["inline"] is False

    wait_until(demoted, timeout=10, what="flood-heavy moved to threads")
    assert runner.functions()["healthy"]["pool"]["inline"] is True  # type: ignore[index]
