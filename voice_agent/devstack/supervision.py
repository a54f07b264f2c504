"""Keeping child processes running, the way systemd or supervisord keeps services up.

A child that exits while the stack runs is restarted after a backoff, with the same command,
environment and ports, so whatever talks to it finds it where it was: a restarted Redis keeps its
port and its append-only data, a restarted local LLM its port, LiveKit its port and key pair. The
other children keep running. A child that exits more than `limit` times within `window_s` is
crash-looping: restarting it again would only hide the fault, so the supervisor reports it (the
child's name and exit codes) and the stack stops.

The backoff is the project's `ReconnectPolicy` (exponential, full jitter). A supervisor waits for
an exit and then starts a process, which is not the shape retry libraries wrap (a call that
raises), and the policy is the one the worker and the hand-over already use.

Each child stops with its own grace: the agent worker gets its drain timeout (running calls
finish and are handed over), the others a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

from voice_agent.backoff import ReconnectPolicy
from voice_agent.devstack.processes import ManagedProcess
from voice_agent.exceptions import DevStackError
from voice_agent.logging import get_logger
from voice_agent.settings import Settings

log = get_logger("devstack")


@dataclass(frozen=True, kw_only=True)
class RestartPolicy:
    """When a child that exited is started again, and when it is given up on."""

    limit: int = 5
    """Restarts allowed within `window_s`; the exit after that many is a crash loop."""
    window_s: float = 60.0
    backoff: ReconnectPolicy = field(
        default_factory=lambda: ReconnectPolicy(initial_delay_s=0.5, max_delay_s=10.0)
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> RestartPolicy:
        """The limit and window the settings give, with the default backoff."""
        return cls(limit=settings.restart_limit, window_s=settings.restart_window_s)


class CrashLoopError(DevStackError):
    """A child kept exiting: more than the policy's restarts within its window."""

    def __init__(self, child: str, returncodes: list[int], window_s: float) -> None:
        codes = ", ".join(str(c) for c in returncodes)
        super().__init__(
            f"{child} exited {len(returncodes)} times within {window_s:g} s "
            f"(exit codes {codes}); not restarting it again"
        )
        self.child = child
        self.returncodes = returncodes
        self.window_s = window_s


@dataclass(eq=False)
class _Child:
    process: ManagedProcess
    ready_timeout_s: float
    stop_grace_s: float
    exits: deque[tuple[float, int]] = field(default_factory=deque)  # (monotonic time, code)
    watcher: asyncio.Task[None] | None = None


class Supervisor:
    """Starts children in order, restarts the ones that exit, stops them in reverse order."""

    def __init__(self, *, policy: RestartPolicy) -> None:
        self._policy = policy
        self._children: list[_Child] = []
        self._failure: DevStackError | None = None
        self._failed = asyncio.Event()
        self._stopping = False

    @property
    def processes(self) -> list[ManagedProcess]:
        """The supervised children, in start order."""
        return [c.process for c in self._children]

    async def start(
        self, process: ManagedProcess, *, ready_timeout_s: float, stop_grace_s: float
    ) -> None:
        """Start `process` and wait until it is ready, then keep it running.

        A child that exits before it is ready is restarted like one that exits later
        (`CrashLoopError` when it keeps doing so); one not ready in time is a `DevStackError`.
        """
        child = _Child(process=process, ready_timeout_s=ready_timeout_s, stop_grace_s=stop_grace_s)
        self._children.append(child)
        await self._bring_up(child, restarting=False)
        child.watcher = asyncio.create_task(self._watch(child), name=f"supervise-{process.name}")

    async def wait_failed(self) -> DevStackError:
        """Wait until a child is given up on; why."""
        await self._failed.wait()
        assert self._failure is not None
        return self._failure

    async def stop(self, *, hurry: asyncio.Event | None = None) -> None:
        """Stop restarting, then stop every child in reverse start order, each with its grace
        (cut short when `hurry` is set)."""
        self._stopping = True
        watchers = [c.watcher for c in self._children if c.watcher is not None]
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        for child in reversed(self._children):
            await child.process.stop(child.stop_grace_s, hurry=hurry)

    async def _bring_up(self, child: _Child, *, restarting: bool) -> None:
        """Start the child until it is ready; each exit on the way counts against the policy."""
        process = child.process
        while True:
            await process.start()
            try:
                await process.wait_ready(child.ready_timeout_s)
                return
            except DevStackError:
                if process.running:  # alive but not ready in time
                    if not restarting:
                        raise
                    await process.stop(2.0)
            await self._exited(child, process.returncode)

    async def _exited(self, child: _Child, returncode: int | None) -> None:
        """Count an exit; `CrashLoopError` when it is one too many, else wait out the backoff."""
        name, policy = child.process.name, self._policy
        now = time.monotonic()
        child.exits.append((now, -1 if returncode is None else returncode))
        while now - child.exits[0][0] > policy.window_s:
            child.exits.popleft()
        if len(child.exits) > policy.limit:
            codes = [code for _, code in child.exits]
            raise CrashLoopError(name, codes, policy.window_s)
        restart = len(child.exits)
        delay = policy.backoff.delay_s(restart)
        log.warning(
            "dev.child_restarting",
            child=name,
            returncode=returncode,
            restart=restart,
            limit=policy.limit,
            delay_s=round(delay, 2),
        )
        await asyncio.sleep(delay)
        child.process.reap()  # whatever it left behind may hold its port

    async def _watch(self, child: _Child) -> None:
        process = child.process
        while True:
            returncode = await process.wait()
            if self._stopping:
                return
            log.error(
                "dev.child_exited", child=process.name, pid=process.pid, returncode=returncode
            )
            try:
                await self._exited(child, returncode)
                await self._bring_up(child, restarting=True)
            except DevStackError as e:
                if self._failure is None:
                    self._failure = e
                    self._failed.set()
                return
            log.info(
                "dev.child_restarted",
                child=process.name,
                pid=process.pid,
                exits_in_window=len(child.exits),
            )
