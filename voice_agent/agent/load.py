"""The load a worker reports to LiveKit: the larger of its call slots in use and its CPU use.

LiveKit routes a job only to workers that report `WS_AVAILABLE` and a load under the server's
`agents.target_load` (0.7 unless configured), weighting the choice by spare load. So the number
must be honest in both directions: calls in progress over `max_jobs`, or this process's CPU use
when that is higher (local speech models make a call CPU-bound long before the slots run out).

CPU use is a fraction of what this process may use: the cores it may run on, or its cgroup's CPU
quota when that is smaller (a container limited to 2 CPUs on a 64-core node has 2, not 64).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

_PROC_CGROUP = Path("/proc/self/cgroup")
_CGROUP_ROOT = Path("/sys/fs/cgroup")
# Where cgroup v1 mounts its cpu controller, by distribution.
_V1_CPU_MOUNTS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def affinity_cores() -> list[int]:
    """The CPUs this process may run on, in order."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0)) or [0]
    return list(range(os.cpu_count() or 1))


def cpu_capacity(*, proc_cgroup: Path = _PROC_CGROUP, cgroup_root: Path = _CGROUP_ROOT) -> float:
    """How many cores' worth of CPU time this process may use (affinity, capped by quota)."""
    cores = float(len(affinity_cores()))
    quota = cgroup_cpu_quota(proc_cgroup=proc_cgroup, cgroup_root=cgroup_root)
    return min(cores, quota) if quota is not None else cores


def usable_cores(*, proc_cgroup: Path = _PROC_CGROUP, cgroup_root: Path = _CGROUP_ROOT) -> int:
    """Whole cores this process may keep busy: what `--processes auto` starts (at least 1)."""
    return max(1, math.floor(cpu_capacity(proc_cgroup=proc_cgroup, cgroup_root=cgroup_root)))


def cgroup_cpu_quota(
    *, proc_cgroup: Path = _PROC_CGROUP, cgroup_root: Path = _CGROUP_ROOT
) -> float | None:
    """The tightest CPU quota (in cores) on this process's cgroup and its ancestors, if any.

    cgroup v2 (`cpu.max`: "<quota> <period>" or "max <period>") and v1 (`cpu.cfs_quota_us`,
    -1 for none, over `cpu.cfs_period_us`) are both read; unreadable files mean no quota.
    """
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2: one unified hierarchy
            quotas += _quotas_along(cgroup_root, path, _v2_quota)
        elif "cpu" in controllers.split(","):
            mounts = [cgroup_root / d for d in _V1_CPU_MOUNTS if (cgroup_root / d).is_dir()]
            if mounts:
                quotas += _quotas_along(mounts[0], path, _v1_quota)
    return min(quotas) if quotas else None


def _quotas_along(mount: Path, path: str, read: Callable[[Path], float | None]) -> list[float]:
    """The quotas set on `path` and every ancestor up to the hierarchy's root."""
    found = []
    current = Path(path.strip() or "/")
    while True:
        quota = read(mount / current.relative_to("/"))
        if quota is not None:
            found.append(quota)
        if current == current.parent:
            return found
        current = current.parent


def _v2_quota(directory: Path) -> float | None:
    try:
        quota, period = (directory / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _v1_quota(directory: Path) -> float | None:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


class ProcessCpuMeter:
    """This process's CPU time as a fraction of the CPU it may use, over the last window."""

    def __init__(self, *, min_window_s: float = 1.0) -> None:
        self._capacity = cpu_capacity()
        self._min_window_s = min_window_s
        self._last_wall = time.monotonic()
        self._last_cpu = time.process_time()
        self._value = 0.0

    def sample(self) -> float:
        """The latest fraction in [0, 1]; windows shorter than `min_window_s` reuse the last one."""
        now, cpu = time.monotonic(), time.process_time()
        elapsed = now - self._last_wall
        if elapsed >= self._min_window_s:
            used = (cpu - self._last_cpu) / (elapsed * self._capacity)
            self._value = min(max(used, 0.0), 1.0)
            self._last_wall, self._last_cpu = now, cpu
        return self._value


def worker_load(*, job_count: int, max_jobs: int, cpu: float = 0.0) -> float:
    """The load to report: calls in progress over capacity, or CPU use when that is higher."""
    return min(max(job_count / max_jobs, cpu, 0.0), 1.0)
