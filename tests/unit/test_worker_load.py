"""How much CPU a worker may use: its cores, capped by its cgroup's quota (v2 and v1)."""

from __future__ import annotations

from pathlib import Path

from voice_agent.agent.load import affinity_cores, cgroup_cpu_quota, cpu_capacity, usable_cores


def cgroup_v2(tmp_path: Path, quotas: dict[str, str]) -> tuple[Path, Path]:
    """A fake unified hierarchy: `cpu.max` contents by cgroup path; the process in the deepest."""
    root = tmp_path / "cgroup"
    for path, value in quotas.items():
        directory = root / path.lstrip("/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cpu.max").write_text(value + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{max(quotas, key=len)}\n")
    return proc, root


def test_a_v2_quota_caps_the_capacity(tmp_path: Path) -> None:
    """`cpu.max` of 150000/100000 means one and a half cores, whatever the affinity."""
    proc, root = cgroup_v2(tmp_path, {"/": "max 100000", "/pod/worker": "150000 100000"})
    assert cgroup_cpu_quota(proc_cgroup=proc, cgroup_root=root) == 1.5
    assert cpu_capacity(proc_cgroup=proc, cgroup_root=root) == min(1.5, len(affinity_cores()))
    assert usable_cores(proc_cgroup=proc, cgroup_root=root) == 1


def test_the_tightest_quota_of_the_ancestors_applies(tmp_path: Path) -> None:
    """A parent cgroup's smaller quota limits its children too."""
    proc, root = cgroup_v2(tmp_path, {"/pod": "50000 100000", "/pod/worker": "400000 100000"})
    assert cgroup_cpu_quota(proc_cgroup=proc, cgroup_root=root) == 0.5
    assert usable_cores(proc_cgroup=proc, cgroup_root=root) == 1  # never fewer than one


def test_no_quota_means_the_affinity_counts(tmp_path: Path) -> None:
    """`max` (v2) or no cgroup file at all leaves the cores the process may run on."""
    proc, root = cgroup_v2(tmp_path, {"/svc": "max 100000"})
    assert cgroup_cpu_quota(proc_cgroup=proc, cgroup_root=root) is None
    assert usable_cores(proc_cgroup=proc, cgroup_root=root) == len(affinity_cores())
    missing = tmp_path / "absent"
    assert cgroup_cpu_quota(proc_cgroup=missing, cgroup_root=root) is None


def test_a_v1_cfs_quota_is_read_too(tmp_path: Path) -> None:
    """cgroup v1: cpu.cfs_quota_us over cpu.cfs_period_us; -1 means none."""
    root = tmp_path / "cgroup"
    limited = root / "cpu,cpuacct" / "docker" / "abc"
    limited.mkdir(parents=True)
    (limited / "cpu.cfs_quota_us").write_text("200000\n")
    (limited / "cpu.cfs_period_us").write_text("100000\n")
    (root / "cpu,cpuacct" / "cpu.cfs_quota_us").write_text("-1\n")
    (root / "cpu,cpuacct" / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cgroup_cpu_quota(proc_cgroup=proc, cgroup_root=root) == 2.0
