"""The event loop thread first, guests last: what the scheduler sees of a real runner.

Reads each thread's ``/proc/PID/task/TID/sched`` (scheduler debug fields:
``prio`` 120 is nice 0, 139 is nice 19; ``se.slice`` is the EEVDF time slice in
nanoseconds, Linux 6.12+).  bench/hostile.py measures what this buys.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_runner.host import cpusched
from support import guests
from support.guests import write_function
from support.runner import RunnerProcess


def _sched(path: Path) -> dict[str, int]:
    fields = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition(":")
        if sep and value.strip().lstrip("-").isdigit():
            fields[name.strip()] = int(value.strip())
    return fields


def _threads(pid: int) -> dict[int, dict[str, int]]:
    return {int(task.name): _sched(task / "sched")
            for task in Path(f"/proc/{pid}/task").iterdir()}


needs_slices = pytest.mark.skipif(
    "se.slice" not in Path("/proc/self/sched").read_text(),
    reason="kernel without per-task slices in /proc (EEVDF custom slices: Linux 6.12+)",
)


@needs_slices
def test_request_slice_sets_the_calling_thread_and_those_it_starts() -> None:
    seen: dict[str, dict[str, int]] = {}

    def child() -> None:
        seen["child"] = _sched(Path("/proc/thread-self/sched"))

    def worker() -> None:
        assert cpusched.request_slice(0.0002)
        seen["worker"] = _sched(Path("/proc/thread-self/sched"))
        started = threading.Thread(target=child)
        started.start()
        started.join()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["worker"]["se.slice"] == seen["child"]["se.slice"] == 200_000
    assert _sched(Path("/proc/thread-self/sched"))["se.slice"] != 200_000  # untouched
    assert cpusched.request_slice(0) is False


@needs_slices
def test_runner_threads_have_a_short_slice_and_guests_a_high_nice(manifest_dir: Path) -> None:
    write_function(manifest_dir, "wagi", guests.wagi_wat(guests.wagi_ok_body()), abi="wagi")
    with RunnerProcess(manifest_dir) as runner:
        assert runner.process is not None
        pid = runner.process.pid
        assert runner.client.get("/wagi").status_code == 200  # WAGI runs on a worker thread
        threads = _threads(pid)
        assert threads[pid]["prio"] == 120  # the main thread runs the event loop
        assert {t["se.slice"] for t in threads.values()} == {round(cpusched.MIN_SLICE * 1e9)}
        # Worker threads (and the threads that compiled the module) at nice 19.
        assert sum(t["prio"] == 139 for t in threads.values()) >= 2, threads


@needs_slices
def test_the_knobs_can_be_turned_off(manifest_dir: Path) -> None:
    write_function(manifest_dir, "wagi", guests.wagi_wat(guests.wagi_ok_body()), abi="wagi")
    args = ["--cpu-slice", "0", "--worker-nice", "0"]
    with RunnerProcess(manifest_dir, extra_args=args) as runner:
        assert runner.process is not None
        pid = runner.process.pid
        assert runner.client.get("/wagi").status_code == 200
        threads = _threads(pid)
        assert round(cpusched.MIN_SLICE * 1e9) not in {t["se.slice"] for t in threads.values()}
        assert {t["prio"] for t in threads.values()} == {120}
