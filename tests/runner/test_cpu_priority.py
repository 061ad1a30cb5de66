"""The event loop thread first, guests last: what the scheduler sees of a real runner.

Reads each thread's ``/proc/PID/task/TID/sched`` (scheduler debug fields:
``prio`` 120 is nice 0, 139 is nice 19; ``se.slice`` is the EEVDF time slice in
nanoseconds, Linux 6.12+).  bench/hostile.py measures what this buys.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from edge_runner import cpusched
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
def test_request_slice_sets_the_calling_thread_only() -> None:
    seen: dict[str, int] = {}

    def worker() -> None:
        assert cpusched.request_slice(0.0002)
        seen.update(_sched(Path("/proc/thread-self/sched")))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen["se.slice"] == 200_000
    assert _sched(Path("/proc/thread-self/sched"))["se.slice"] != 200_000  # untouched
    assert cpusched.request_slice(0) is False


@needs_slices
def test_runner_event_loop_has_a_short_slice_and_guests_a_high_nice(manifest_dir: Path) -> None:
    write_function(manifest_dir, "wagi", guests.wagi_wat(guests.wagi_ok_body()), abi="wagi")
    with RunnerProcess(manifest_dir) as runner:
        assert runner.process is not None
        pid = runner.process.pid
        assert runner.client.get("/wagi").status_code == 200  # WAGI runs on a worker thread
        threads = _threads(pid)
        loop = threads[pid]  # the main thread runs the event loop
        assert loop["se.slice"] == round(cpusched.MIN_SLICE * 1e9)
        assert loop["prio"] == 120
        workers = [t for t in threads.values() if t["prio"] == 139]
        assert workers, {tid: t["prio"] for tid, t in threads.items()}
        # Not the loop's slice, inherited when the loop thread started them: the default.
        assert all(t["se.slice"] > loop["se.slice"] for t in workers)


@needs_slices
def test_the_knobs_can_be_turned_off(manifest_dir: Path) -> None:
    write_function(manifest_dir, "wagi", guests.wagi_wat(guests.wagi_ok_body()), abi="wagi")
    args = ["--loop-slice", "0", "--worker-nice", "0"]
    with RunnerProcess(manifest_dir, extra_args=args) as runner:
        assert runner.process is not None
        pid = runner.process.pid
        assert runner.client.get("/wagi").status_code == 200
        threads = _threads(pid)
        assert threads[pid]["se.slice"] != round(cpusched.MIN_SLICE * 1e9)
        assert {t["prio"] for t in threads.values()} == {120}
