"""Child processes that die with their parent and stop cleanly.

Each child runs in its own process group (so stopping it stops everything it spawned) and gets
`PR_SET_PDEATHSIG`, so even a `kill -9` of the supervisor leaves no orphan behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from voice_agent.datadir import open_private, private_dir
from voice_agent.exceptions import DevStackError
from voice_agent.logging import get_logger

log = get_logger("devstack")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Run in the child between fork and exec: SIGTERM it when its parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 15000
_handed_out: set[int] = set()
"""Ports (TCP and UDP) this process handed out: a port is picked before its server binds it,
so a second pick in that window must not return it again."""


def _outside_ephemeral() -> range:
    """Ports the kernel never gives an outgoing connection (or a bind to port 0): below its
    ephemeral range, or above it when that starts too low to leave room."""
    try:
        low, high = (int(v) for v in _EPHEMERAL_RANGE.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    if low - _LOWEST_PORT >= 2000:
        return range(_LOWEST_PORT, low)
    return range(high + 1, 65536)


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    """Whether `port` can be bound on every interface (LiveKit listens on all of them)."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on every interface (so on `host`) right now, for a server about
    to be started on it. Picked outside the kernel's ephemeral range: a port taken from that
    range (bind to port 0) can be handed to some outgoing connection before the server binds
    it, and LiveKit then exits at once ("address already in use", exit code 0). Never the
    same port twice in one process."""
    candidates = _outside_ephemeral()
    for _ in range(500):
        port = random.choice(candidates)  # noqa: S311 - a port, not a secret
        if port not in _handed_out and _bindable(port, socket.SOCK_STREAM):
            _handed_out.add(port)
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # a crowded range: the kernel
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_udp_range(size: int = 100) -> tuple[int, int]:
    """`size` consecutive UDP ports (first, last) free right now, outside the ephemeral range
    (where clients' WebRTC sockets come from) and apart from every port handed out before: a
    LiveKit server's media ports."""
    candidates = _outside_ephemeral()
    for _ in range(200):
        first = random.randrange(candidates.start, candidates.stop - size, size)  # noqa: S311
        ports = range(first, first + size)
        if _handed_out.isdisjoint(ports) and all(_bindable(p, socket.SOCK_DGRAM) for p in ports):
            _handed_out.update(ports)
            return first, first + size - 1
    raise DevStackError(f"no {size} free UDP ports in a row outside the ephemeral range")


ReadyCheck = Callable[[], Awaitable[bool]]


class ManagedProcess:
    """One supervised child: started, awaited until ready, stopped with its whole group."""

    def __init__(
        self,
        *,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: ReadyCheck,
        log_file: Path | None = None,
        ready_probe_timeout_s: float = 1.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._ready = ready
        self._ready_probe_timeout_s = ready_probe_timeout_s
        self._log_file = log_file
        self._log_handle: IO[bytes] | None = None
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Spawn the child (again, after it exited); output goes to its log file (or is
        inherited)."""
        self._close_log()
        stdout: int | IO[bytes] | None = None
        if self._log_file is not None:
            private_dir(self._log_file.parent)
            fd = open_private(self._log_file, os.O_WRONLY | os.O_APPEND)
            self._log_handle = os.fdopen(fd, "ab")
            stdout = self._log_handle
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=asyncio.subprocess.STDOUT if stdout is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.info("child.started", child=self.name, pid=self.proc.pid)

    async def wait_ready(self, timeout_s: float) -> None:
        """Poll the readiness check until it passes, the child dies, or time runs out."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            if not self.running:
                raise DevStackError(
                    f"{self.name} exited with code {self.returncode} before it was ready"
                    + (f"; see {self._log_file}{self._log_tail()}" if self._log_file else "")
                )
            ready = False
            # Any failure of the probe means "not yet". (asyncio.timeout, not wait_for: on 3.11
            # wait_for can swallow a cancellation that lands as the probe finishes.)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self._ready_probe_timeout_s):
                    ready = await self._ready()
            if ready:
                log.info("child.ready", child=self.name, pid=self.pid)
                return
            if time.monotonic() >= deadline:
                raise DevStackError(f"{self.name} was not ready after {timeout_s:.0f} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _log_tail(self, lines: int = 5, limit: int = 2000) -> str:
        """The last lines of the child's log, for an error that is read where the file is not
        (a CI transcript)."""
        assert self._log_file is not None
        try:
            with self._log_file.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 64 * 1024))
                tail = f.read().decode("utf-8", "replace").splitlines()[-lines:]
        except OSError:
            return ""
        text = "\n".join(tail)[-limit:]
        return f"; it ended with:\n{text}" if text else ""

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode if self.proc else None

    async def wait(self) -> int:
        """Wait for the child to exit; its exit code."""
        assert self.proc is not None, "start() first"
        return await self.proc.wait()

    async def stop(self, grace_s: float = 5.0, *, hurry: asyncio.Event | None = None) -> None:
        """SIGTERM the child's process group, then SIGKILL what is left after `grace_s` (or as
        soon as `hurry` is set)."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal_group(signal.SIGTERM)
            if not await _exited_within(proc, grace_s, hurry):
                log.warning("child.kill", child=self.name, pid=proc.pid, grace_s=grace_s)
                self._signal_group(signal.SIGKILL)
                await proc.wait()
        self.reap()
        log.info("child.stopped", child=self.name, pid=proc.pid, returncode=proc.returncode)
        self._close_log()

    def reap(self) -> None:
        """SIGKILL anything the exited child left in its process group (it may hold a port)."""
        if self.proc is not None:
            self._signal_group(signal.SIGKILL)

    def _close_log(self) -> None:
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


async def _exited_within(
    proc: asyncio.subprocess.Process, grace_s: float, hurry: asyncio.Event | None
) -> bool:
    """Wait up to `grace_s` for `proc` to exit, less when `hurry` is set; True when it did."""
    exited = asyncio.ensure_future(proc.wait())
    waits: set[asyncio.Future[Any]] = {exited}
    if hurry is not None:
        waits.add(asyncio.ensure_future(hurry.wait()))
    try:
        await asyncio.wait(waits, timeout=grace_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in waits:
            fut.cancel()
    return proc.returncode is not None


async def tcp_open(host: str, port: int) -> bool:
    """True when something accepts TCP connections on host:port."""
    _, writer = await asyncio.open_connection(host, port)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True
