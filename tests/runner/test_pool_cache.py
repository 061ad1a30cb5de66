"""Instance pool and compiled-module cache (R6): recycling, LRU eviction order under a
small budget, disk-cache hits after a restart, recovery from a corrupted cache file."""

from __future__ import annotations

from pathlib import Path

from support import guests
from support.guests import write_function
from support.runner import RunnerProcess, metric_value

MiB = 2**20


def _counts(runner: RunnerProcess, path: str, times: int) -> list[int]:
    return [int.from_bytes(runner.client.get(path).content, "little") for _ in range(times)]


def test_instances_are_recycled_after_their_request_quota(manifest_dir: Path) -> None:
    write_function(manifest_dir, "quota", guests.counter_wat(), pool={"maxInstances": 1})
    with RunnerProcess(manifest_dir, extra_args=["--instance-max-requests", "3"]) as runner:
        assert _counts(runner, "/quota", 7) == [1, 2, 3, 1, 2, 3, 1]
        text = runner.metrics()
        assert metric_value(text, "edge_instance_evictions_total",
                            {"function": "quota", "cause": "recycle"}) == 2
        assert metric_value(text, "edge_cold_starts_total", {"function": "quota"}) == 3
        assert metric_value(text, "edge_cold_start_duration_seconds_count",
                            {"function": "quota"}) == 3
        assert metric_value(text, "edge_instances", {"function": "quota", "state": "idle"}) == 1


def _fragile_counter_wat() -> str:
    """:func:`~support.guests.counter_wat` that traps on a request envelope over 1 KiB
    (a request with a body), so one instance can be made to fail between good calls."""
    handle = '(func (export "edge_handle") (param i32 i32) (result i64)\n'
    source = guests.counter_wat()
    assert handle in source
    return source.replace(handle, handle + "    (if (i32.gt_u (local.get 1) (i32.const 1024))"
                                           " (then unreachable))\n")


def test_a_failed_instance_leaves_the_pool_and_is_replaced(manifest_dir: Path) -> None:
    write_function(manifest_dir, "flaky", _fragile_counter_wat(), pool={"maxInstances": 1})
    with RunnerProcess(manifest_dir) as runner:
        assert _counts(runner, "/flaky", 2) == [1, 2]  # one warm instance
        for _ in range(2):
            assert runner.client.post("/flaky", content=b"x" * 2048).status_code == 502
        # The failed instance is gone: the next request starts a fresh one from 1.
        assert _counts(runner, "/flaky", 2) == [1, 2]
        text = runner.metrics()
        assert metric_value(text, "edge_instance_evictions_total",
                            {"function": "flaky", "cause": "failure"}) == 2
        assert metric_value(text, "edge_cold_starts_total", {"function": "flaky"}) == 3
        assert metric_value(text, "edge_instances", {"function": "flaky", "state": "idle"}) == 1


def test_budget_evicts_the_least_recently_used_idle_instance(
        manifest_dir: Path, tmp_path: Path) -> None:
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text(f"{1024 * MiB}\n")
    # usable = 0.8 x 1 GiB - baseline (~0.1 GiB).  An idle instance keeps what its
    # memory holds (~200 MiB here) reserved; a running one its whole limit (250 MiB):
    # three idle ones and a fourth running one do not fit.
    for name in ("a", "b", "c", "d"):
        write_function(manifest_dir, name, guests.grown_wat(name.encode(), 200),
                       limits={"memory": "250Mi"})
    with RunnerProcess(manifest_dir, env={"EDGE_RUNNER_CGROUP_ROOT": str(cgroup)}) as runner:
        for name in ("a", "b", "c", "a"):  # b is now the least recently used
            assert runner.client.get(f"/{name}").text == name
        reserved = metric_value(runner.metrics(), "edge_memory_budget_bytes",
                                {"kind": "reserved"})
        assert 3 * 200 * MiB <= reserved < 3 * 201 * MiB
        assert runner.client.get("/d").text == "d"
        idle = {n: runner.functions()[n]["pool"]["idle"] for n in "abcd"}  # type: ignore[index]
        assert idle == {"a": 1, "b": 0, "c": 1, "d": 1}
        assert metric_value(runner.metrics(), "edge_instance_evictions_total",
                            {"function": "b", "cause": "budget"}) == 1
        assert runner.client.get("/b").text == "b"  # and c, now the oldest, made room
        assert runner.functions()["c"]["pool"]["idle"] == 0  # type: ignore[index]


def test_disk_cache_serves_a_restart_and_survives_corruption(
        manifest_dir: Path, tmp_path: Path, hello_wasm: Path) -> None:
    cache = tmp_path / "cache"
    (manifest_dir / "hello.wasm").write_bytes(hello_wasm.read_bytes())
    write_function(manifest_dir, "hello", hello_wasm.read_bytes(), path="/hello",
                   path_type="Prefix")
    args = ["--cache-dir", str(cache)]

    def load_and_call() -> str:
        with RunnerProcess(manifest_dir, extra_args=args) as runner:
            assert runner.client.get("/hello", params={"name": "Ada"}).text == "Hello, Ada!"
            return runner.metrics()

    first = load_and_call()
    assert metric_value(first, "edge_module_cache_requests_total", {"result": "miss"}) == 1
    artifacts = list(cache.rglob("*.cwasm"))
    assert len(artifacts) == 1

    second = load_and_call()  # a restart starts from the compiled artifact
    assert metric_value(second, "edge_module_cache_requests_total", {"result": "disk_hit"}) == 1
    assert metric_value(second, "edge_module_cache_requests_total", {"result": "miss"}) == 0

    damaged = bytearray(artifacts[0].read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    artifacts[0].write_bytes(bytes(damaged))
    third = load_and_call()  # detected, recompiled, rewritten; never loaded blindly
    assert metric_value(third, "edge_module_cache_requests_total", {"result": "miss"}) == 1
    fourth = load_and_call()
    assert metric_value(fourth, "edge_module_cache_requests_total", {"result": "disk_hit"}) == 1
