"""The pod's cgroup limits, as the runner sees them: memory and CPU.

Read at start-up by :mod:`edge_runner.invoke.budget` (the memory limit the budget keeps
under) and :mod:`edge_runner.server` (how many worker threads guests get).  Both
look at this process's cgroup and every ancestor and take the tightest limit:
cgroup v2 first (``memory.max``, ``cpu.max``), then v1 (``memory.limit_in_bytes``,
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``).  The root of the hierarchy is the
``cgroup-root`` setting; tests point it at a fake one.
"""

from __future__ import annotations

from pathlib import Path

PROC_SELF_CGROUP = Path("/proc/self/cgroup")
#: cgroup v1 spells "no limit" as a huge page-rounded number; anything above this is none.
NO_LIMIT_ABOVE = 2**60


def _parse_limit(text: str) -> int | None:
    value = text.strip()
    if not value.isdigit():  # "max" (v2), "-1" (v1) or garbage
        return None
    number = int(value)
    return number if 0 < number < NO_LIMIT_ABOVE else None


def _own_cgroups(proc_cgroup: Path, controller: str) -> tuple[str, str]:
    """This process's (v2 path, v1 ``controller`` path) from /proc/self/cgroup ("/" if unknown)."""
    v2 = v1 = "/"
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return v2, v1
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            v2 = path or "/"
        elif controller in controllers.split(","):
            v1 = path or "/"
    return v2, v1


def _ancestors(base: Path, path: str) -> list[Path]:
    """``base/path`` and each parent up to ``base`` itself."""
    parts = [p for p in path.split("/") if p and p not in (".", "..")]
    return [base.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_limit(path: Path) -> int | None:
    """The positive number in ``path``; None if absent, unlimited or unreadable."""
    text = _read(path)
    return None if text is None else _parse_limit(text)


def read_cgroup_limit(root: Path, proc_cgroup: Path = PROC_SELF_CGROUP) -> tuple[int, Path] | None:
    """The tightest memory limit over this process's cgroup and its ancestors, and its file.

    cgroup v2 (``memory.max``) is read first, then v1
    (``memory/memory.limit_in_bytes``).  Returns None when no limit is set.
    """
    v2, v1 = _own_cgroups(proc_cgroup, "memory")
    candidates = [d / "memory.max" for d in _ancestors(root, v2)]
    candidates += [d / "memory.limit_in_bytes" for d in _ancestors(root / "memory", v1)]
    found: list[tuple[int, Path]] = []
    for path in candidates:
        limit = _read_limit(path)
        if limit is not None:
            found.append((limit, path))
    return min(found) if found else None


def read_cpu_limit(root: Path, proc_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The tightest CPU quota over this process's cgroup and its ancestors, in CPUs
    (``quota / period``: 1.5 = one and a half CPUs of time per period); None if none.

    A Kubernetes ``limits.cpu`` becomes this quota; unlike the CPUs the process
    may run on (its affinity, often the whole node), it is what the kernel lets
    the pod use before it stops every thread of it until the next period.
    """
    v2, v1 = _own_cgroups(proc_cgroup, "cpu")
    found: list[float] = []
    for directory in _ancestors(root, v2):
        text = _read(directory / "cpu.max")
        fields = text.split() if text else []
        if len(fields) == 2:
            quota, period = _parse_limit(fields[0]), _parse_limit(fields[1])
            if quota and period:
                found.append(quota / period)
    for directory in _ancestors(root / "cpu", v1):
        quota = _read_limit(directory / "cpu.cfs_quota_us")
        period = _read_limit(directory / "cpu.cfs_period_us")
        if quota and period:
            found.append(quota / period)
    return min(found) if found else None
