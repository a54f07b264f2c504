"""The load a worker reports to LiveKit: the larger of its call slots in use and its CPU use.

LiveKit routes a job only to workers that report `WS_AVAILABLE` and a load under the server's
`agents.target_load` (0.7 unless configured), weighting the choice by spare load. So the number
must be honest in both directions: calls in progress over `max_jobs`, or this process's CPU use
when that is higher (local speech models make a call CPU-bound long before the slots run out).
"""

from __future__ import annotations

import os
import time


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


class ProcessCpuMeter:
    """This process's CPU time as a fraction of the cores it may use, over the last window."""

    def __init__(self, *, min_window_s: float = 1.0) -> None:
        self._cores = _usable_cores()
        self._min_window_s = min_window_s
        self._last_wall = time.monotonic()
        self._last_cpu = time.process_time()
        self._value = 0.0

    def sample(self) -> float:
        """The latest fraction in [0, 1]; windows shorter than `min_window_s` reuse the last one."""
        now, cpu = time.monotonic(), time.process_time()
        elapsed = now - self._last_wall
        if elapsed >= self._min_window_s:
            self._value = min(max((cpu - self._last_cpu) / (elapsed * self._cores), 0.0), 1.0)
            self._last_wall, self._last_cpu = now, cpu
        return self._value


def worker_load(*, job_count: int, max_jobs: int, cpu: float = 0.0) -> float:
    """The load to report: calls in progress over capacity, or CPU use when that is higher."""
    return min(max(job_count / max_jobs, cpu, 0.0), 1.0)
