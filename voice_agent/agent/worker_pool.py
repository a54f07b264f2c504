"""`voice-agent worker --processes N|auto`: one agent worker process per core, under one command.

Each child is a plain `voice-agent worker`: its own LiveKit registration, call slots and load
report, so LiveKit spreads calls over the children by the load each reports. The pool around
them is a small supervisor:

- children are pinned one to a core when there are no more of them than cores (so each measures
  its CPU load against the one core it runs on), and die with the pool (`PR_SET_PDEATHSIG`
  SIGTERM, so even then they drain);
- with `VOICE_AGENT_WORKER_METRICS_PORT=P`, child i serves `/metrics` and `/healthz` on `P + i`;
- SIGTERM or SIGINT is passed to every child at once, so all drain in parallel and each gets the
  full `VOICE_AGENT_DRAIN_TIMEOUT_S`; what still runs `stop_margin_s` after that is killed;
- a child that exits while the pool serves is restarted after a backoff (0.5 s, doubling to 30 s).
  `crash_loop_restarts` exits of one child within `crash_loop_window_s` is a crash loop: the pool
  drains the other children and exits 1, for the service manager to see. Exit code 2 (the CLI's
  configuration error) is not retried: the pool stops and exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voice_agent.agent.load import affinity_cores, usable_cores
from voice_agent.exceptions import ConfigError
from voice_agent.logging import get_logger
from voice_agent.settings import Settings, child_environment

log = get_logger("agent.pool")

EXIT_CONFIG_ERROR = 2  # what `voice-agent` returns for a configuration it cannot run with
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """How the pool supervises its children."""

    processes: int
    drain_timeout_s: float = 600.0
    stop_margin_s: float = 15.0
    """Beyond the drain timeout, how long a stopping child has before it is killed."""
    restart_delay_s: float = 0.5
    restart_max_delay_s: float = 30.0
    crash_loop_restarts: int = 5
    crash_loop_window_s: float = 60.0

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError("a worker pool needs at least one process")
        if self.crash_loop_restarts < 1:
            raise ValueError("crash_loop_restarts must be at least 1")


@dataclass(eq=False)
class _Child:
    index: int
    core: int | None
    proc: asyncio.subprocess.Process | None = None
    exits: deque[float] = field(default_factory=deque)  # monotonic times of unexpected exits

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class WorkerPool:
    """Runs `options.processes` children from `command(i)` with `env(i)`, restarting crashes."""

    def __init__(
        self,
        *,
        options: PoolOptions,
        command: Callable[[int], Sequence[str]],
        env: Callable[[int], Mapping[str, str]],
        cores: Sequence[int] | None = None,
    ) -> None:
        if cores is not None and len(cores) < options.processes:
            raise ValueError("pinning needs a core for every process")
        self._options = options
        self._command = command
        self._env = env
        self._children = [
            _Child(index=i, core=cores[i] if cores is not None else None)
            for i in range(options.processes)
        ]
        self._exits: asyncio.Queue[tuple[_Child, int]] = asyncio.Queue()
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pids(self) -> list[int | None]:
        """Each child's process id (None while it is being restarted)."""
        return [c.proc.pid if c.running and c.proc else None for c in self._children]

    def stop(self) -> None:
        """Drain every child and end `run()` (safe from a signal handler, safe to repeat)."""
        self._stopping.set()

    async def run(self) -> int:
        """Serve until `stop()` or a crash loop; the exit code for the pool's process."""
        log.info(
            "worker.pool_started",
            processes=self._options.processes,
            cores=[c.core for c in self._children],
        )
        code = 0
        try:
            for child in self._children:
                await self._spawn(child)
            code = await self._supervise()
        finally:
            await self._stop_children()
            log.info("worker.pool_stopped", returncode=code)
        return code

    async def _supervise(self) -> int:
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                exited = asyncio.ensure_future(self._exits.get())
                await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not exited.done():
                    exited.cancel()
                    break
                child, returncode = exited.result()
                verdict = self._after_exit(child, returncode)
                if verdict is not None:
                    return verdict
        finally:
            stopping.cancel()
        return 0

    def _after_exit(self, child: _Child, returncode: int) -> int | None:
        """Restart a child that exited on its own; the pool's exit code when it must stop."""
        if self._stopping.is_set():
            return None
        now = time.monotonic()
        child.exits.append(now)
        while child.exits and now - child.exits[0] > self._options.crash_loop_window_s:
            child.exits.popleft()
        log.warning("worker.child_exited", index=child.index, returncode=returncode)
        if returncode == EXIT_CONFIG_ERROR:
            log.error("worker.pool_failed", index=child.index, reason="configuration error")
            return EXIT_CONFIG_ERROR
        if len(child.exits) >= self._options.crash_loop_restarts:
            log.error(
                "worker.pool_crash_loop",
                index=child.index,
                exits=len(child.exits),
                window_s=self._options.crash_loop_window_s,
            )
            return 1
        delay = min(
            self._options.restart_delay_s * 2 ** (len(child.exits) - 1),
            self._options.restart_max_delay_s,
        )
        log.info("worker.child_restarting", index=child.index, delay_s=delay)
        self._own(self._restart(child, delay), name=f"worker-pool-restart-{child.index}")
        return None

    async def _restart(self, child: _Child, delay_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay_s):
                await self._stopping.wait()
        if self._stopping.is_set():
            return
        try:
            await self._spawn(child)
        except OSError as e:
            log.error("worker.child_spawn_failed", index=child.index, error=str(e))
            self._exits.put_nowait((child, 127))

    async def _spawn(self, child: _Child) -> None:
        core = child.core
        proc = await asyncio.create_subprocess_exec(
            *self._command(child.index),
            env=dict(self._env(child.index)),
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=lambda: _prepare_child(core),
        )
        child.proc = proc
        log.info("worker.child_started", index=child.index, pid=proc.pid, core=core)

        async def watch() -> None:
            returncode = await proc.wait()
            self._exits.put_nowait((child, returncode))

        self._own(watch(), name=f"worker-pool-watch-{child.index}")

    async def _stop_children(self) -> None:
        """SIGTERM every running child at once; kill what outlives the drain and margin."""
        self._stopping.set()
        running = [c for c in self._children if c.running]
        for child in running:
            assert child.proc is not None
            with contextlib.suppress(ProcessLookupError):
                child.proc.send_signal(signal.SIGTERM)
        if running:
            log.info("worker.pool_draining", children=len(running))
        grace = self._options.drain_timeout_s + self._options.stop_margin_s
        waits = [asyncio.ensure_future(c.proc.wait()) for c in running if c.proc is not None]
        if waits:
            _, late = await asyncio.wait(waits, timeout=grace)
            for wait in late:
                wait.cancel()
        for child in running:
            assert child.proc is not None
            if child.proc.returncode is None:
                log.warning("worker.child_killed", index=child.index, grace_s=grace)
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                await child.proc.wait()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _own(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _prepare_child(core: int | None) -> None:
    """Between fork and exec: pin to `core`, and get SIGTERM when the pool dies (Linux)."""
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def resolve_processes(value: str) -> int:
    """`auto` (one per usable core) or a positive number; `ValueError` otherwise."""
    if value == "auto":
        return usable_cores()
    count = int(value)
    if count < 1:
        raise ValueError("at least one process")
    return count


def child_metrics_port(base: int | None, index: int) -> int | None:
    """Child `index`'s metrics port: `base + index` (0 stays 0: each picks a free port)."""
    if base is None or base == 0:
        return base
    return base + index


async def run_worker_pool(settings: Settings, processes: int) -> int:
    """Run `processes` agent workers until SIGTERM/SIGINT; the exit code."""
    settings.livekit_credentials()  # a missing key fails here, once, not in every child
    base = settings.worker_metrics_port
    if base and base + processes - 1 > 65535:
        raise ConfigError(
            f"VOICE_AGENT_WORKER_METRICS_PORT={base} leaves no room for {processes} processes "
            f"(child i serves on {base} + i)"
        )
    cores = affinity_cores()
    if processes > len(cores):
        log.warning("worker.pool_oversubscribed", processes=processes, cores=len(cores))

    def env(index: int) -> dict[str, str]:
        port = child_metrics_port(base, index)
        extra = {} if port is None else {"VOICE_AGENT_WORKER_METRICS_PORT": str(port)}
        return child_environment(extra)

    pool = WorkerPool(
        options=PoolOptions(processes=processes, drain_timeout_s=settings.drain_timeout_s),
        command=lambda _: [sys.executable, "-m", "voice_agent", "worker"],
        env=env,
        cores=cores[:processes] if processes <= len(cores) else None,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, pool.stop)
    try:
        return await pool.run()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
