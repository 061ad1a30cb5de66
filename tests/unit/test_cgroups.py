"""Reading the pod's cgroup limits (edge_runner.host.cgroups) from fake hierarchies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_runner.host.cgroups import read_cgroup_limit, read_cpu_limit
from edge_runner.server import usable_cpus
from edge_runner.settings import RunnerSettings


def _proc_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_cgroup_v2_limit_is_the_tightest_along_the_hierarchy(tmp_path: Path) -> None:
    leaf = tmp_path / "kubepods" / "pod1"
    leaf.mkdir(parents=True)
    (tmp_path / "kubepods" / "memory.max").write_text("536870912\n")
    (leaf / "memory.max").write_text("max\n")
    found = read_cgroup_limit(tmp_path, _proc_cgroup(tmp_path, "0::/kubepods/pod1\n"))
    assert found == (512 * 2**20, tmp_path / "kubepods" / "memory.max")


def test_cgroup_v1_is_the_fallback_and_unlimited_is_none(tmp_path: Path) -> None:
    proc = _proc_cgroup(tmp_path, "4:memory:/box\n0::/\n")
    (tmp_path / "memory" / "box").mkdir(parents=True)
    limit_file = tmp_path / "memory" / "box" / "memory.limit_in_bytes"
    limit_file.write_text("9223372036854771712\n")  # v1's "no limit"
    assert read_cgroup_limit(tmp_path, proc) is None
    limit_file.write_text("1073741824\n")
    assert read_cgroup_limit(tmp_path, proc) == (2**30, limit_file)
    assert read_cgroup_limit(tmp_path / "nowhere", proc) is None


def test_cpu_quota_v2_is_the_tightest_along_the_hierarchy(tmp_path: Path) -> None:
    leaf = tmp_path / "kubepods" / "pod1"
    leaf.mkdir(parents=True)
    proc = _proc_cgroup(tmp_path, "0::/kubepods/pod1\n")
    (leaf / "cpu.max").write_text("max 100000\n")
    assert read_cpu_limit(tmp_path, proc) is None
    (tmp_path / "kubepods" / "cpu.max").write_text("400000 100000\n")
    assert read_cpu_limit(tmp_path, proc) == 4.0
    (leaf / "cpu.max").write_text("150000 100000\n")
    assert read_cpu_limit(tmp_path, proc) == 1.5


def test_cpu_quota_v1_is_the_fallback_and_minus_one_is_none(tmp_path: Path) -> None:
    proc = _proc_cgroup(tmp_path, "3:cpu,cpuacct:/box\n0::/\n")
    box = tmp_path / "cpu" / "box"
    box.mkdir(parents=True)
    (box / "cpu.cfs_period_us").write_text("100000\n")
    (box / "cpu.cfs_quota_us").write_text("-1\n")
    assert read_cpu_limit(tmp_path, proc) is None
    (box / "cpu.cfs_quota_us").write_text("50000\n")
    assert read_cpu_limit(tmp_path, proc) == 0.5


@pytest.mark.parametrize(("quota", "cpus"), [("50000 100000", 1), ("100000 100000", 1),
                                             ("150000 100000", 2), ("max 100000", None)])
def test_worker_threads_follow_the_cpu_quota_not_only_the_affinity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quota: str, cpus: int | None
) -> None:
    # The fake root holds cpu.max itself, an ancestor of whatever cgroup this test runs in.
    (tmp_path / "cpu.max").write_text(quota + "\n")
    monkeypatch.setenv("EDGE_RUNNER_CGROUP_ROOT", str(tmp_path))
    affinity = len(os.sched_getaffinity(0))
    expected = affinity if cpus is None else min(affinity, cpus)
    assert usable_cpus(RunnerSettings().cgroup_root) == expected
