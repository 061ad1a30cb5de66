"""Standalone mode (R2): a folder of manifests, reloaded on change, errors isolated."""

from __future__ import annotations

from pathlib import Path

from support.guests import constant_wat, counter_wat, trap_wat, write_function
from support.keepalive import KeepAlive
from support.runner import RunnerProcess, metric_value, wait_until


def test_reload_on_change_without_restart(manifest_dir: Path) -> None:
    """One keep-alive connection sees every version (a restarted process would have
    closed it), and a function that did not change keeps its warm instance."""
    write_function(manifest_dir, "greet", constant_wat(b"v1"))
    write_function(manifest_dir, "steady", counter_wat(), pool={"reuse": True})
    with RunnerProcess(manifest_dir) as runner, KeepAlive(runner.port) as connection:
        assert connection.text("/greet") == "v1"
        assert [connection.get("/steady")[1] for _ in range(2)] == [count(1), count(2)]
        old_digest = runner.functions()["greet"]["digest"]
        write_function(manifest_dir, "greet", constant_wat(b"v2"))
        wait_until(lambda: connection.text("/greet") == "v2", what="new version served")
        assert runner.functions()["greet"]["digest"] != old_digest
        write_function(manifest_dir, "other", constant_wat(b"o"))
        wait_until(lambda: connection.get("/other")[0] == 200, what="new function")
        (manifest_dir / "other.yaml").unlink()
        wait_until(lambda: connection.get("/other")[0] == 404, what="removal")
        assert connection.get("/steady")[1] == count(3)  # the same instance, still warm
        assert runner.functions()["steady"]["pool"]["coldStarts"] == 1  # type: ignore[index]


def count(value: int) -> bytes:
    return value.to_bytes(4, "little")


def test_broken_manifests_and_modules_do_not_stop_the_others(manifest_dir: Path) -> None:
    write_function(manifest_dir, "good", constant_wat(b"fine"))
    (manifest_dir / "garbage.yaml").write_text("{ this is: [not yaml")
    (manifest_dir / "invalid.yaml").write_text(
        "apiVersion: edgerunner.dev/v1alpha1\nkind: EdgeFunction\nmetadata: {name: invalid}\n"
        "spec: {source: {path: x.wasm}, limits: {memory: lots}}\n"
    )
    write_function(manifest_dir, "notwasm", b"\x00asm but not really")
    write_function(manifest_dir, "importer", """(module
      (import "env" "steal" (func))
      (memory (export "memory") 1)
      (func (export "edge_alloc") (param i32) (result i32) (i32.const 0))
      (func (export "edge_handle") (param i32 i32) (result i64) (i64.const 0)))""")
    with RunnerProcess(manifest_dir) as runner:
        assert runner.client.get("/good").text == "fine"
        functions = runner.functions()
        assert functions["invalid"]["state"] == "error"
        assert "spec.limits.memory" in str(functions["invalid"]["error"])
        assert "CompileError" in str(functions["notwasm"]["error"])
        assert "env.steal" in str(functions["importer"]["error"])
        errors = runner.admin.get("/v1/functions").json()["errors"]
        assert any("garbage.yaml" in e for e in errors)
        unavailable = runner.client.get("/notwasm")
        assert unavailable.status_code == 503
        assert unavailable.headers["retry-after"]
        assert "CompileError" not in unavailable.json()["detail"]  # status and log only


def test_last_good_version_keeps_serving_after_a_bad_update(manifest_dir: Path) -> None:
    write_function(manifest_dir, "svc", constant_wat(b"good"))
    with RunnerProcess(manifest_dir) as runner:
        assert runner.client.get("/svc").text == "good"
        write_function(manifest_dir, "svc", b"not wasm at all")
        wait_until(lambda: runner.functions()["svc"].get("error"), what="error reported")
        assert runner.client.get("/svc").text == "good"


def test_trap_and_bad_envelope_are_502_and_the_runner_keeps_serving(manifest_dir: Path) -> None:
    write_function(manifest_dir, "ok", constant_wat(b"ok"))
    write_function(manifest_dir, "trap", trap_wat())
    write_function(manifest_dir, "garbled", constant_wat(b"", raw=b"\xff" * 12))
    write_function(manifest_dir, "outside", constant_wat(b"x", extra="", handle_prefix=""
                                                         ).replace("(i64.const 1024)",
                                                                   "(i64.const 900000)"))
    with RunnerProcess(manifest_dir) as runner:
        for name, reason in [("trap", "trap"), ("garbled", "bad_response"),
                             ("outside", "bad_response")]:
            response = runner.client.get(f"/{name}")
            assert response.status_code == 502, (name, response.text)
            problem = response.json()
            assert problem["function"] == name
            assert problem["request_id"] == response.headers["x-request-id"]
            assert metric_value(runner.metrics(), "edge_invocation_errors_total",
                                {"function": name, "reason": reason}) == 1
        assert runner.client.get("/ok").text == "ok"
        assert runner.functions()["trap"]["pool"]["discarded"] == 1  # type: ignore[index]


def test_reuse_keeps_globals_and_fresh_does_not(manifest_dir: Path) -> None:
    write_function(manifest_dir, "hot", counter_wat(), pool={"reuse": True, "maxInstances": 1})
    write_function(manifest_dir, "cold", counter_wat(), pool={"reuse": False})
    with RunnerProcess(manifest_dir) as runner:
        hot = [int.from_bytes(runner.client.get("/hot").content, "little") for _ in range(3)]
        cold = [int.from_bytes(runner.client.get("/cold").content, "little") for _ in range(3)]
        assert hot == [1, 2, 3]
        assert cold == [1, 1, 1]
        assert runner.client.get("/hot").headers["content-type"] == "application/octet-stream"
        # Fresh by renewal: one instance, renewed after each request (docs/abi.md).
        text = runner.metrics()
        assert metric_value(text, "edge_cold_starts_total", {"function": "cold"}) == 1
        assert metric_value(text, "edge_instance_renewals_total", {"function": "cold"}) == 3
    with RunnerProcess(manifest_dir, extra_args=["--instance-renewal", "false"]) as runner:
        cold = [int.from_bytes(runner.client.get("/cold").content, "little") for _ in range(3)]
        assert cold == [1, 1, 1]
        text = runner.metrics()
        assert metric_value(text, "edge_cold_starts_total", {"function": "cold"}) == 3
        assert "edge_instance_renewals_total{" not in text


def test_route_conflicts_are_reported(manifest_dir: Path) -> None:
    write_function(manifest_dir, "one", constant_wat(b"1"), path="/same")
    write_function(manifest_dir, "two", constant_wat(b"2"), path="/same")
    with RunnerProcess(manifest_dir) as runner:
        body = runner.admin.get("/v1/functions").json()
        assert body["conflicts"] == ["two/0 conflicts with one/0 on any host /same; one/0 wins"]
        assert runner.client.get("/same").text == "1"
        assert metric_value(runner.metrics(), "edge_route_conflicts") == 1
