"""`voice-agent dev`: starts the real stack, reports ready, and leaves nothing behind."""

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
import pytest

from tests.helpers import strip_project_env
from voice_agent.devstack.processes import free_port
from voice_agent.testing.openai_script import ChatReply, Timeline, TranscriptionReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

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
    data_dir: Path = Path()


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
    assert proc.stdout is not None and proc.stderr is not None
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
    call = await _stored_call(dev_stack, result["call_id"])
    assert call["status"] == "done", call.get("last_error")
    assert call["report"]["report"]["summary"]
    # The answer came from the model, not from the fallback line a failed turn plays.
    record = call["record"]
    failures = [e for e in record["events"] if e["event"] == "stage_failed"]
    assert failures == [], failures
    assert "having trouble" not in result["turns"][0]["agent_text"]
    lines = [e["data"].get("line") for e in record["events"] if e["event"] == "line_spoken"]
    assert "fallback" not in lines and "failure_goodbye" not in lines, lines
    assert record["usage"]["llm_requests"] >= 1  # (llama.cpp's server streams no token usage)
    spoken = [t for t in record["transcript"] if t["speaker"] == "agent" and t["kind"] == "reply"]
    assert spoken and spoken[0]["text"], record["transcript"]
    children = _descendants(dev_stack.proc.pid)
    # livekit, redis, token service, local LLM, post-call worker, agent worker
    assert len(children) >= 6, children
    dev_stack.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(dev_stack.proc.wait(), timeout=60) == 0
    assert _alive(children) == set()
    data = dev_stack.data_dir
    assert not (data / "calls" / f"{result['call_id']}.jsonl").exists()  # stored: removed
    assert _open_modes(data) == {}  # transcripts are personal data


def _open_modes(root: Path) -> dict[str, str]:
    """Everything under `root` (itself included) not private to its owner, with its mode."""
    found = {}
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if mode != (0o700 if path.is_dir() else 0o600):
            found[str(path.relative_to(root.parent))] = oct(mode)
    return found


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


def _events(run: DevRun, name: str) -> list[dict[str, Any]]:
    """dev's (and its children's) JSON log events called `name`, oldest first."""
    found = []
    for line in run.stderr:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("event") == name:
                found.append(entry)
    return found


def _pids(run: DevRun) -> dict[str, int]:
    """Each child's current pid, from the supervisor's `child.started` events."""
    return {e["child"]: e["pid"] for e in _events(run, "child.started")}


async def _staff_token(run: DevRun) -> str:
    """The staff token dev printed in its ready banner."""
    async with asyncio.timeout(10):  # the banner's last lines follow the ready line
        while not (banner := [line for line in run.stdout if "staff token " in line]):  # noqa: ASYNC110 - lines arrive on a reader task
            await asyncio.sleep(0.05)
    return banner[0].split("staff token ", 1)[1].split()[0]


async def _stored_call(run: DevRun, call_id: str, *, timeout_s: float = 90) -> dict[str, Any]:
    """The call as the staff API shows it once its post-call job is done or dead."""
    staff = {"Authorization": f"Bearer {await _staff_token(run)}"}
    async with aiohttp.ClientSession(headers=staff) as http, asyncio.timeout(timeout_s):
        while True:
            async with http.get(f"{run.url}/api/calls/{call_id}") as resp:
                call = await resp.json() if resp.status == 200 else {}
            if call.get("status") in ("done", "dead"):
                return dict(call)
            await asyncio.sleep(0.5)


def _restarts(run: DevRun, child: str) -> int:
    """How often the supervisor has restarted `child` so far."""
    return len([e for e in _events(run, "dev.child_restarted") if e["child"] == child])


async def _kill_and_wait_for_restart(run: DevRun, child: str) -> None:
    """kill -9 one child and wait until the supervisor says it runs again (and nobody else
    was restarted)."""
    before, restarts = _pids(run), _restarts(run, child)
    os.kill(before[child], signal.SIGKILL)
    async with asyncio.timeout(90):
        while _restarts(run, child) == restarts:
            assert run.proc.returncode is None, "".join(run.stderr[-50:])
            await asyncio.sleep(0.1)
    after = _pids(run)
    assert after[child] != before[child]
    others = {name: pid for name, pid in before.items() if name != child}
    assert {name: after[name] for name in others} == others


@pytest.fixture(scope="module")
async def offline_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevRun]:
    """One offline dev stack (local LLM, Whisper, Piper) shared by the restart tests."""
    async with _run_dev(tmp_path_factory.mktemp("offline")) as run:
        yield run


@pytest.mark.parametrize("child", ["redis", "agent-worker", "local-llm"])
async def test_a_killed_child_is_restarted_and_the_stack_serves_a_call_again(
    offline_stack: DevRun, child: str
) -> None:
    """kill -9 of Redis, the agent worker or the local LLM: that child alone is restarted, and
    the next call gets the model's answer and reaches a stored report."""
    await _kill_and_wait_for_restart(offline_stack, child)
    result = await _call(offline_stack.url, "What are your opening hours?")
    assert result["turns"][0]["agent_text"]
    assert "having trouble" not in result["turns"][0]["agent_text"]
    call = await _stored_call(offline_stack, result["call_id"])
    assert call["status"] == "done", call.get("last_error")
    assert not [e for e in call["record"]["events"] if e["event"] == "stage_failed"]
    assert offline_stack.proc.returncode is None


async def test_a_child_that_keeps_dying_stops_the_stack_loudly(tmp_path: Path) -> None:
    """A child that dies at once (here LiveKit) is restarted VOICE_AGENT_RESTART_LIMIT times,
    then dev stops everything, exits 1 and says which child and with what exit codes."""
    env = strip_project_env(dict(os.environ))
    env.update(
        VOICE_AGENT_PORT=str(free_port()),
        VOICE_AGENT_DATA_DIR=str(tmp_path / "data"),
        VOICE_AGENT_LOG_FORMAT="json",
        VOICE_AGENT_RESTART_LIMIT="2",
        LIVEKIT_SERVER_BIN="/bin/false",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voice_agent", "dev",
        env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    run = DevRun(proc=proc, url="", stderr=err.decode().splitlines(), stdout=[])
    assert proc.returncode == 1
    started = [e for e in _events(run, "child.started") if e["child"] == "livekit"]
    assert len(started) == 3  # the first start and two restarts
    [loop] = _events(run, "dev.crash_loop")
    assert loop["child"] == "livekit" and loop["returncodes"] == [1, 1, 1]
    assert "livekit exited 3 times" in err.decode()
    assert _alive({e["pid"] for e in started}) == set()
    assert READY_LINE not in out.decode()


async def test_sigterm_lets_a_call_in_progress_finish_and_be_handed_over(tmp_path: Path) -> None:
    """SIGTERM while the agent waits for a slow model: the caller still hears the answer, the
    call is handed to the post-call queue, and only then does dev exit 0."""
    # Slower than any short stop grace: the agent worker's is its drain timeout.
    slow = Timeline(first_delay_s=8.0)
    models = ScriptedOpenAI(
        chat=[ChatReply(text="We open at nine.", timeline=slow)],
        transcriptions=[TranscriptionReply(text="When do you open?")],
    )
    speech_too = {"VOICE_AGENT_STT": "openai", "VOICE_AGENT_TTS": "openai"}
    async with models, _run_dev(tmp_path, OPENAI_BASE_URL=models.base_url, **speech_too) as dev:
        children = _descendants(dev.proc.pid)
        call = asyncio.create_task(_call(dev.url, "When do you open?"))
        await asyncio.wait_for(models.wait_for_requests(CHAT_PATH, 1), 60)
        dev.proc.send_signal(signal.SIGTERM)
        result = await call
        assert await asyncio.wait_for(dev.proc.wait(), timeout=60) == 0
    assert _events(dev, "worker.signal")  # the worker was draining while it answered
    assert result["turns"][0]["agent_text"] == "We open at nine."
    handed = [e for e in _events(dev, "postcall.handed_over") if e["call_id"] == result["call_id"]]
    assert len(handed) == 1 and handed[0]["complete"]
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
