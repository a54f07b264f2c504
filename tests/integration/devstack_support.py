"""Running `voice-agent dev` from a test and reading what it did: its children, its log events,
its staff API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.helpers import strip_project_env
from voice_agent.devstack.processes import free_port

READY_LINE = "Voice agent ready"


def descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to `root`."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces; fields resume after the last ')'.
            fields = line.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def alive(candidates: set[int]) -> set[int]:
    """Those of `candidates` still running (not zombies)."""
    found = set()
    for pid in candidates:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.add(pid)
    return found


@dataclass
class DevRun:
    proc: asyncio.subprocess.Process
    url: str
    stderr: list[str]
    stdout: list[str]
    data_dir: Path = Path()


async def _collect(stream: asyncio.StreamReader, sink: list[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode(errors="replace"))


@contextlib.asynccontextmanager
async def run_dev(tmp_path: Path, **extra_env: str) -> AsyncIterator[DevRun]:
    """`python -m voice_agent dev` on free ports, waited for until it prints its URL."""
    port = free_port()
    env = strip_project_env(dict(os.environ))
    env.update(
        VOICE_AGENT_PORT=str(port),
        LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}",
        VOICE_AGENT_DATA_DIR=str(tmp_path / "data"),
        VOICE_AGENT_LOG_FORMAT="json",
        **extra_env,
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_agent", "dev",
        env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    stderr: list[str] = []
    stderr_task = asyncio.create_task(_collect(proc.stderr, stderr))
    stdout: list[str] = []
    stdout_task: asyncio.Task[None] | None = None

    async def until_ready() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            stdout.append(line.decode())
            if READY_LINE in stdout[-1]:
                return
        raise AssertionError("dev exited before it was ready:\n" + "".join(stderr))

    try:
        await asyncio.wait_for(until_ready(), timeout=90)
        stdout_task = asyncio.create_task(_collect(proc.stdout, stdout))
        yield DevRun(
            proc=proc,
            url=f"http://127.0.0.1:{port}",
            stderr=stderr,
            stdout=stdout,
            data_dir=tmp_path / "data",
        )
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr_task.cancel()
        if stdout_task is not None:
            stdout_task.cancel()


def open_modes(root: Path) -> dict[str, str]:
    """Everything under `root` (itself included) not private to its owner, with its mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if mode != (0o700 if path.is_dir() else 0o600):
            found[str(path.relative_to(root.parent))] = oct(mode)
    return found


async def dev_call(url: str, text: str) -> dict[str, Any]:
    """`voice-agent call --say text` against `url`; its JSON result (it must exit 0)."""
    env = strip_project_env(dict(os.environ)) | {"VOICE_AGENT_LOG_LEVEL": "warning"}
    call = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_agent", "call", "--url", url, "--say", text,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(call.communicate(), timeout=120)
    assert call.returncode == 0, err.decode()[-2000:]
    return dict(json.loads(out))


def events(run: DevRun, name: str) -> list[dict[str, Any]]:
    """dev's (and its children's) JSON log events called `name`, oldest first."""
    found = []
    for line in run.stderr:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
    return found


def pids(run: DevRun) -> dict[str, int]:
    """Each child's current pid, from the supervisor's `child.started` events."""
    return {e["child"]: e["pid"] for e in events(run, "child.started")}


async def staff_token(run: DevRun) -> str:
    """The staff token dev printed in its ready banner."""
    async with asyncio.timeout(10):  # the banner's last lines follow the ready line
        while not (banner := [line for line in run.stdout if "staff token " in line]):  # noqa: ASYNC110 - lines arrive on a reader task
            await asyncio.sleep(0.05)
    return banner[0].split("staff token ", 1)[1].split()[0]


async def stored_call(run: DevRun, call_id: str, *, timeout_s: float = 240) -> dict[str, Any]:
    """The call as the staff API shows it once its post-call job is done or dead. The budget
    covers the offline demo model's worst case, not its usual 5-10 s: SmolLM2 at times writes
    until `max_tokens` (2,000) without closing its JSON, twice (the repair attempt), which is
    40-60 s an attempt on 2 busy cores, and then the report falls back to the rules."""
    staff = {"Authorization": f"Bearer {await staff_token(run)}"}
    async with aiohttp.ClientSession(headers=staff) as http, asyncio.timeout(timeout_s):
        while True:
            async with http.get(f"{run.url}/api/calls/{call_id}") as resp:
                call = await resp.json() if resp.status == 200 else {}
            if call.get("status") in ("done", "dead"):
                return dict(call)
            await asyncio.sleep(0.5)


def restart_count(run: DevRun, child: str) -> int:
    """How often the supervisor has restarted `child` so far."""
    return len([e for e in events(run, "dev.child_restarted") if e["child"] == child])


async def kill_and_wait_for_restart(run: DevRun, child: str) -> None:
    """kill -9 one child and wait until the supervisor says it runs again (and nobody else
    was restarted)."""
    before, count = pids(run), restart_count(run, child)
    os.kill(before[child], signal.SIGKILL)
    async with asyncio.timeout(90):
        while restart_count(run, child) == count:
            assert run.proc.returncode is None, "".join(run.stderr[-50:])
            await asyncio.sleep(0.1)
    after = pids(run)
    assert after[child] != before[child]
    others = {name: pid for name, pid in before.items() if name != child}
    assert {name: after[name] for name in others} == others
