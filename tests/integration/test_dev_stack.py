"""`voice-agent dev`: starts the real stack, reports ready, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import strip_project_env
from voice_agent.devstack.processes import free_port
from voice_agent.testing.openai_script import ChatReply, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

READY_LINE = "Voice agent ready"


def _descendants(root: int) -> set[int]:
    """Every live process whose parent chain leads to `root`."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The command name may hold spaces; fields resume after the last ')'.
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        children = {pid for pid, ppid in parents.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


@dataclass
class DevRun:
    proc: asyncio.subprocess.Process
    url: str
    stderr: list[str]
    stdout: list[str]


async def _collect(stream: asyncio.StreamReader, sink: list[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode(errors="replace"))


@contextlib.asynccontextmanager
async def _run_dev(tmp_path: Path, **extra_env: str) -> AsyncIterator[DevRun]:
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
        yield DevRun(proc=proc, url=f"http://127.0.0.1:{port}", stderr=stderr, stdout=stdout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr_task.cancel()
        if stdout_task is not None:
            stdout_task.cancel()


@pytest.fixture
async def dev_stack(tmp_path: Path) -> AsyncIterator[DevRun]:
    """The dev stack with no model provider configured (no agent worker)."""
    async with _run_dev(tmp_path) as run:
        yield run


async def test_dev_starts_ready_and_stops_clean_on_sigterm(dev_stack: DevRun) -> None:
    """With no API key the stack is all local: it answers /readyz, mints tokens, and a caller
    gets a spoken answer (offline demo LLM, Whisper, Piper); SIGTERM leaves no process behind."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{dev_stack.url}/readyz") as resp:
            assert resp.status == 200
            assert (await resp.json())["checks"] == {"livekit": "ok", "redis": "ok", "store": "ok"}
        async with http.post(f"{dev_stack.url}/api/voice-token") as resp:
            assert resp.status == 200
    result = await _call(dev_stack.url, "What are your opening hours?")
    assert result["turns"][0]["user_text"].lower().startswith("what are your opening hours")
    assert result["turns"][0]["agent_text"]  # whatever the tiny demo model says
    assert result["agent_audio_seconds"] > 1.0
    # The call reaches the post-call worker and its report the staff API, with the printed token.
    async with asyncio.timeout(10):  # the banner's last lines follow the ready line
        while not (banner := [line for line in dev_stack.stdout if "staff token " in line]):  # noqa: ASYNC110 - lines arrive on a reader task
            await asyncio.sleep(0.05)
    token = banner[0].split("staff token ", 1)[1].split()[0]
    staff = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(headers=staff) as http:
        async with asyncio.timeout(90):
            while True:
                async with http.get(f"{dev_stack.url}/api/calls/{result['call_id']}") as resp:
                    call = await resp.json() if resp.status == 200 else {}
                if call.get("status") in ("done", "dead"):
                    break
                await asyncio.sleep(0.5)
    assert call["status"] == "done", call.get("last_error")
    assert call["report"]["report"]["summary"]
    # The answer came from the model, not from the fallback line a failed turn plays.
    record = call["record"]
    failures = [e for e in record["events"] if e["event"] == "stage_failed"]
    assert failures == [], failures
    assert "having trouble" not in result["turns"][0]["agent_text"]
    lines = [e["data"].get("line") for e in record["events"] if e["event"] == "line_spoken"]
    assert "fallback" not in lines, lines
    assert "failure_goodbye" not in lines, lines
    assert record["usage"]["llm_requests"] >= 1  # (llama.cpp's server streams no token usage)
    spoken = [t for t in record["transcript"] if t["speaker"] == "agent" and t["kind"] == "reply"]
    assert spoken, record["transcript"]
    assert spoken[0]["text"], record["transcript"]
    children = _descendants(dev_stack.proc.pid)
    # livekit, redis, token service, local LLM, post-call worker, agent worker
    assert len(children) >= 6, children
    dev_stack.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(dev_stack.proc.wait(), timeout=60) == 0
    assert _alive(children) == set()


async def _call(url: str, text: str) -> dict[str, Any]:
    """`voice-agent call --say text` against `url`; its JSON result (it must exit 0)."""
    env = strip_project_env(dict(os.environ)) | {"VOICE_AGENT_LOG_LEVEL": "warning"}
    call = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_agent", "call", "--url", url, "--say", text,
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(call.communicate(), timeout=120)
    assert call.returncode == 0, err.decode()[-2000:]
    return dict(json.loads(out))


async def test_a_crashed_child_stops_the_whole_stack_loudly(dev_stack: DevRun) -> None:
    """Killing one child (Redis) makes dev report the crash, stop everything and exit non-zero."""
    children = _descendants(dev_stack.proc.pid)
    redis_pids = [p for p in children if "redis-server" in Path(f"/proc/{p}/cmdline").read_text()]
    assert len(redis_pids) == 1
    os.kill(redis_pids[0], signal.SIGKILL)
    assert await asyncio.wait_for(dev_stack.proc.wait(), timeout=30) == 1
    assert any("dev.child_crashed" in line and "redis" in line for line in dev_stack.stderr)
    assert _alive(children) == set()


async def test_killing_the_supervisor_leaves_no_orphans(dev_stack: DevRun) -> None:
    """Even `kill -9` of dev takes its children down with it (parent-death signal)."""
    children = _descendants(dev_stack.proc.pid)
    dev_stack.proc.kill()
    await dev_stack.proc.wait()
    deadline = asyncio.get_running_loop().time() + 20
    while _alive(children):
        assert asyncio.get_running_loop().time() < deadline, _alive(children)
        await asyncio.sleep(0.1)


async def test_dev_with_a_model_server_runs_a_whole_call(tmp_path: Path) -> None:
    """With a model endpoint set, dev runs the agent worker too: `voice-agent call` gets answers."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text="We open at nine.")],
        transcriptions=[TranscriptionReply(text="When do you open?")],
    )
    speech_too = {"VOICE_AGENT_STT": "openai", "VOICE_AGENT_TTS": "openai"}
    async with models, _run_dev(tmp_path, OPENAI_BASE_URL=models.base_url, **speech_too) as dev:
        children = _descendants(dev.proc.pid)
        assert len(children) >= 4, children  # livekit, redis, token service, agent worker
        result = await _call(dev.url, "When do you open?")
        assert result["turns"][0]["agent_text"] == "We open at nine."
        dev.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(dev.proc.wait(), timeout=60) == 0
    assert _alive(children) == set()
