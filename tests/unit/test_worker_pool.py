"""The worker pool's supervision, with real child processes standing in for agent workers."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from voice_agent.agent.worker_pool import (
    PoolOptions,
    WorkerPool,
    child_metrics_port,
    resolve_processes,
)
from voice_agent.cli import main

STEP_S = 20.0

# A stand-in worker: says it is ready (signal handler installed), then behaves as argv[2] says.
CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path

    out, mode, index = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    def note(what):
        with (out / f"{index}.log").open("a") as f:
            f.write(f"{what} {os.getpid()} {time.time()}\\n")
    def drain(*_):
        note("draining")
        time.sleep(0.5)
        note("drained")
        sys.exit(0)
    signal.signal(signal.SIGTERM, drain if mode != "stubborn" else signal.SIG_IGN)
    note("ready")
    if mode == "crash":
        sys.exit(1)
    if mode == "config":
        sys.exit(2)
    while True:
        time.sleep(0.1)
    """
)


def events(out: Path, index: int) -> list[tuple[str, int, float]]:
    """What child `index` noted so far: (event, pid, time)."""
    path = out / f"{index}.log"
    if not path.exists():
        return []
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return [(r[0], int(r[1]), float(r[2])) for r in rows if len(r) == 3]


async def eventually(predicate: Callable[[], bool], timeout_s: float = STEP_S) -> None:
    """Poll an observable state (files the children write) until it holds."""
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110  # other processes' files: nothing to await
            await asyncio.sleep(0.02)


def pool(out: Path, modes: list[str], **options: float) -> WorkerPool:
    script = out / "child.py"
    script.write_text(CHILD)
    return WorkerPool(
        options=PoolOptions(processes=len(modes), **options),  # type: ignore[arg-type]
        command=lambda i: [sys.executable, str(script), str(out), modes[i], str(i)],
        env=lambda _: dict(os.environ),
    )


def ready(out: Path, index: int) -> int:
    """How many times child `index` has started."""
    return sum(1 for e in events(out, index) if e[0] == "ready")


async def test_stop_drains_every_child_at_once_and_waits_for_all(tmp_path: Path) -> None:
    """SIGTERM reaches both children together; the pool returns once both have drained."""
    workers = pool(tmp_path, ["drain", "drain"], drain_timeout_s=10)
    running = asyncio.create_task(workers.run())
    await eventually(lambda: ready(tmp_path, 0) == ready(tmp_path, 1) == 1)
    workers.stop()
    async with asyncio.timeout(STEP_S):
        assert await running == 0
    first, second = ([e for e in events(tmp_path, i) if e[0] != "ready"] for i in (0, 1))
    assert [e[0] for e in first] == [e[0] for e in second] == ["draining", "drained"]
    # Both were draining before either finished: the drains ran in parallel.
    assert max(first[0][2], second[0][2]) < min(first[1][2], second[1][2])


async def test_a_child_that_outlives_its_drain_is_killed(tmp_path: Path) -> None:
    """A child ignoring SIGTERM is killed once the drain timeout and the margin have passed."""
    workers = pool(tmp_path, ["stubborn"], drain_timeout_s=0.3, stop_margin_s=0.2)
    running = asyncio.create_task(workers.run())
    await eventually(lambda: ready(tmp_path, 0) == 1)
    pid = events(tmp_path, 0)[0][1]
    started = time.monotonic()
    workers.stop()
    async with asyncio.timeout(STEP_S):
        assert await running == 0
    assert time.monotonic() - started >= 0.5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_killed_child_is_restarted_and_the_others_keep_running(tmp_path: Path) -> None:
    """SIGKILL of one child: the pool starts a new one in its place; its sibling is untouched."""
    workers = pool(tmp_path, ["drain", "drain"], restart_delay_s=0.05)
    running = asyncio.create_task(workers.run())
    await eventually(lambda: ready(tmp_path, 0) == ready(tmp_path, 1) == 1)
    victim, sibling = events(tmp_path, 0)[0][1], events(tmp_path, 1)[0][1]
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: ready(tmp_path, 0) == 2)
    assert workers.pids[1] == sibling
    assert workers.pids[0] not in (None, victim)
    workers.stop()
    async with asyncio.timeout(STEP_S):
        assert await running == 0


async def test_a_crash_loop_stops_the_pool_with_a_failure(tmp_path: Path) -> None:
    """A child that keeps dying is restarted with backoff, then the pool gives up and exits 1."""
    workers = pool(
        tmp_path,
        ["crash", "drain"],
        restart_delay_s=0.05,
        crash_loop_restarts=3,
        crash_loop_window_s=30,
    )
    with capture_logs() as logs:
        async with asyncio.timeout(STEP_S):
            assert await workers.run() == 1
    assert ready(tmp_path, 0) == 3  # the first start and two restarts
    # The delay the pool waits grows (judged from the pool's own word: the children's start
    # times also hold their interpreters' start-up, which a loaded machine stretches at will).
    delays = [e["delay_s"] for e in logs if e["event"] == "worker.child_restarting"]
    assert delays == [0.05, 0.1]
    assert [e[0] for e in events(tmp_path, 1)][-1] == "drained"  # the sibling was drained


async def test_a_configuration_error_is_not_retried(tmp_path: Path) -> None:
    """Exit code 2 (bad configuration) stops the pool at once with the same code."""
    workers = pool(tmp_path, ["config", "drain"], restart_delay_s=0.05)
    async with asyncio.timeout(STEP_S):
        assert await workers.run() == 2
    assert ready(tmp_path, 0) == 1


def test_processes_auto_means_one_per_usable_core() -> None:
    """`auto` counts the cores this process may use; numbers are taken as they are."""
    assert resolve_processes("auto") == len(os.sched_getaffinity(0))
    assert resolve_processes("3") == 3
    for bad, says in (("0", "at least one"), ("-1", "at least one"), ("many", "invalid literal")):
        with pytest.raises(ValueError, match=says):
            resolve_processes(bad)


def test_child_i_serves_metrics_on_the_base_port_plus_i() -> None:
    """The documented port scheme: base + index; unset stays unset, 0 stays 0."""
    assert [child_metrics_port(9100, i) for i in range(3)] == [9100, 9101, 9102]
    assert child_metrics_port(None, 1) is None
    assert child_metrics_port(0, 1) == 0


def test_the_cli_refuses_a_process_count_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    """`--processes 0` is a usage error, before anything starts."""
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--processes", "0"])
    assert exit_info.value.code == 2
    assert "positive number or auto" in capsys.readouterr().err
