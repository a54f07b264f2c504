"""Memory of a system under test: the sum over its process tree (a worker and its job processes,
a dispatcher and its bots), read from /proc."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def descendants(root: int, parents: Mapping[int, int]) -> set[int]:
    """`root` and every process below it, given each pid's parent pid."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


def _parents() -> dict[int, int]:
    parents = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited while we looked
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def _kib(path: Path, field: str) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True)
class TreeMemory:
    """Resident memory summed over a process tree, in MB: RSS (shared pages counted in every
    process) and PSS (shared pages split between their sharers), and how many processes."""

    rss_mb: float
    pss_mb: float
    processes: int


def tree_memory(root: int) -> TreeMemory:
    """The memory of `root`'s process tree right now."""
    pids = descendants(root, _parents())
    rss = sum(_kib(PROC / str(p) / "status", "VmRSS:") for p in pids)
    pss = sum(_kib(PROC / str(p) / "smaps_rollup", "Pss:") for p in pids)
    return TreeMemory(rss_mb=rss / 1024, pss_mb=pss / 1024, processes=len(pids))
