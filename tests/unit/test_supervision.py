"""The supervisor on real child processes: restarts, crash loops and per-child stop graces."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from voice_agent.backoff import ReconnectPolicy
from voice_agent.devstack.processes import ManagedProcess
from voice_agent.devstack.supervision import CrashLoopError, RestartPolicy, Supervisor
from voice_agent.exceptions import DevStackError

FAST = ReconnectPolicy(initial_delay_s=0.01, max_delay_s=0.05)


async def _always() -> bool:
    return True


async def _never() -> bool:
    return False


def _python(name: str, code: str, *, ready: bool = True) -> ManagedProcess:
    return ManagedProcess(
        name=name, argv=[sys.executable, "-c", code], ready=_always if ready else _never
    )


SLEEPER = "import time; time.sleep(60)"


def _handling_sigterm(handler: str, ready_file: Path) -> ManagedProcess:
    """A child that installs `handler` for SIGTERM, then says it is ready (a file appears)."""
    code = (
        "import pathlib, signal, sys, time\n"
        f"signal.signal(signal.SIGTERM, {handler})\n"
        f"pathlib.Path({str(ready_file)!r}).touch()\n"
        "time.sleep(60)\n"
    )

    async def ready() -> bool:
        return ready_file.exists()

    return ManagedProcess(name="handler", argv=[sys.executable, "-c", code], ready=ready)


# Exits 0 a moment after SIGTERM, as a draining worker does.
DRAINS = "lambda *_: (time.sleep(0.5), sys.exit(0))"


@pytest.fixture
async def supervisor() -> AsyncIterator[Supervisor]:
    sup = Supervisor(policy=RestartPolicy(limit=3, window_s=60.0, backoff=FAST))
    try:
        yield sup
    finally:
        await sup.stop()


async def _restarted(process: ManagedProcess, old_pid: int) -> int:
    """The child's new pid once it runs again."""
    async with asyncio.timeout(10):
        while process.pid == old_pid or not process.running:  # noqa: ASYNC110 - polls a pid
            await asyncio.sleep(0.01)
    assert process.pid is not None
    return process.pid


async def test_a_killed_child_is_restarted_and_its_sibling_keeps_running(
    supervisor: Supervisor,
) -> None:
    """kill -9 of one child: it runs again under a new pid; the other child is untouched."""
    first, second = _python("first", SLEEPER), _python("second", SLEEPER)
    await supervisor.start(first, ready_timeout_s=5, stop_grace_s=1)
    await supervisor.start(second, ready_timeout_s=5, stop_grace_s=1)
    first_pid, second_pid = first.pid, second.pid
    assert first_pid is not None
    assert second_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    assert await _restarted(first, first_pid) != first_pid
    assert second.pid == second_pid
    assert second.running


async def test_a_child_that_keeps_exiting_is_a_crash_loop(supervisor: Supervisor) -> None:
    """A child that dies at once is restarted `limit` times, then given up on with its codes."""
    crasher = _python("crasher", "import sys; sys.exit(3)", ready=False)
    with capture_logs() as logs, pytest.raises(CrashLoopError) as caught:
        await supervisor.start(crasher, ready_timeout_s=5, stop_grace_s=1)
    assert caught.value.child == "crasher"
    assert caught.value.returncodes == [3, 3, 3, 3]
    starts = [e for e in logs if e["event"] == "child.started"]
    assert len(starts) == 4  # the first start and three restarts


async def test_a_crash_loop_after_start_is_reported_by_wait_failed(
    supervisor: Supervisor,
) -> None:
    """A running child that is killed over and over is given up on; wait_failed says which."""
    victim = _python("victim", SLEEPER)
    await supervisor.start(victim, ready_timeout_s=5, stop_grace_s=1)
    for kill in range(4):
        pid = victim.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        if kill < 3:
            await _restarted(victim, pid)
    failure = await asyncio.wait_for(supervisor.wait_failed(), 10)
    assert isinstance(failure, CrashLoopError)
    assert failure.child == "victim"
    assert failure.returncodes == [-9, -9, -9, -9]


@pytest.mark.parametrize(("grace_s", "returncode"), [(10.0, 0), (0.1, -signal.SIGKILL)])
async def test_each_child_stops_within_its_own_grace(
    grace_s: float, returncode: int, tmp_path: Path
) -> None:
    """A child that needs a moment after SIGTERM finishes within a long grace, and is killed
    when its grace is shorter than that."""
    sup = Supervisor(policy=RestartPolicy(backoff=FAST))
    drainer = _handling_sigterm(DRAINS, tmp_path / "ready")
    await sup.start(drainer, ready_timeout_s=10, stop_grace_s=grace_s)
    await sup.stop()
    assert drainer.returncode == returncode


async def test_hurry_cuts_a_long_grace_short(tmp_path: Path) -> None:
    """With `hurry` set, a child with a long grace is killed instead of waited for."""
    sup = Supervisor(policy=RestartPolicy(backoff=FAST))
    stubborn = _handling_sigterm("signal.SIG_IGN", tmp_path / "ready")
    await sup.start(stubborn, ready_timeout_s=10, stop_grace_s=600)
    hurry = asyncio.Event()
    hurry.set()
    await asyncio.wait_for(sup.stop(hurry=hurry), 10)
    assert stubborn.returncode == -signal.SIGKILL


async def test_a_child_that_dies_before_ready_says_what_its_log_ended_with(
    tmp_path: Path,
) -> None:
    """A child that exits before it is ready (LiveKit exits 0 on a port it cannot bind) raises
    with the end of its log in the message, which a CI transcript shows where the file is gone."""

    code = "for i in range(40): print(f'line {i}')\nprint('could not bind 7881')\n"
    child = ManagedProcess(
        name="dies",
        argv=[sys.executable, "-c", code],
        ready=_never,
        log_file=tmp_path / "dies.log",
    )
    await child.start()
    await child.wait()
    with pytest.raises(DevStackError, match="exited with code 0") as raised:
        await child.wait_ready(5)
    message = str(raised.value)
    assert message.endswith("line 39\ncould not bind 7881")
    assert "line 35" not in message
    await child.stop()
