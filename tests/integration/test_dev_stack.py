"""`voice-agent dev`: starts the real stack, reports ready, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.helpers import strip_project_env
from tests.integration.devstack_support import (
    READY_LINE,
    DevRun,
    alive,
    descendants,
    dev_call,
    events,
    kill_and_wait_for_restart,
    open_modes,
    pids,
    restart_count,
    run_dev,
    stored_call,
)
from tests.integration.stack import speech
from voice_agent.agent.options import SessionOptions
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.processes import free_port
from voice_agent.testing.openai_script import ChatReply, Timeline, TranscriptionReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

pytestmark = pytest.mark.integration

FALLBACK_LINE = SessionOptions(instructions="", greeting="").fallback_line


@pytest.fixture
async def dev_stack(tmp_path: Path) -> AsyncIterator[DevRun]:
    """The dev stack with no model provider configured (no agent worker)."""
    async with run_dev(tmp_path) as run:
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
    result = await dev_call(dev_stack.url, "What are your opening hours?")
    assert result["turns"][0]["user_text"].lower().startswith("what are your opening hours")
    assert result["turns"][0]["agent_text"]  # whatever the tiny demo model says
    assert result["agent_audio_seconds"] > 1.0
    # The call reaches the post-call worker and its report the staff API, with the printed token.
    call = await stored_call(dev_stack, result["call_id"])
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
    children = descendants(dev_stack.proc.pid)
    # livekit, redis, token service, local LLM, post-call worker, agent worker
    assert len(children) >= 6, children
    dev_stack.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(dev_stack.proc.wait(), timeout=60) == 0
    assert alive(children) == set()
    data = dev_stack.data_dir
    assert not (data / "calls" / f"{result['call_id']}.jsonl").exists()  # stored: removed
    assert open_modes(data) == {}  # transcripts are personal data


@pytest.fixture(scope="module")
async def offline_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[DevRun]:
    """One offline dev stack (local LLM, Whisper, Piper) shared by the restart tests."""
    async with run_dev(tmp_path_factory.mktemp("offline")) as run:
        yield run


@pytest.mark.parametrize("child", ["redis", "agent-worker"])
async def test_a_killed_child_is_restarted_and_the_stack_serves_a_call_again(
    offline_stack: DevRun, child: str
) -> None:
    """kill -9 of Redis or the agent worker: that child alone is restarted, and the next call
    gets the model's answer and reaches a stored report (the local LLM: the next test)."""
    await kill_and_wait_for_restart(offline_stack, child)
    result = await dev_call(offline_stack.url, "What are your opening hours?")
    assert result["turns"][0]["agent_text"]
    assert "having trouble" not in result["turns"][0]["agent_text"]
    call = await stored_call(offline_stack, result["call_id"])
    assert call["status"] == "done", call.get("last_error")
    assert not [e for e in call["record"]["events"] if e["event"] == "stage_failed"]
    assert offline_stack.proc.returncode is None


async def test_local_llm_crashing_mid_call_is_heard_as_the_fallback_and_recorded_once(
    offline_stack: DevRun,
) -> None:
    """The local LLM dies as the caller's question reaches it: the caller hears the fallback
    line, the call is recorded once, complete and flagged; the restarted model answers the
    next call."""
    before = pids(offline_stack)
    llm = before["local-llm"]
    restarts = restart_count(offline_stack, "local-llm")
    turns_before = len(events(offline_stack, "turn.user"))
    crashed = asyncio.get_running_loop().create_future()

    async def crash_on_the_question() -> None:
        os.kill(llm, signal.SIGSTOP)  # it can no longer answer...
        async with asyncio.timeout(60):
            while len(events(offline_stack, "turn.user")) == turns_before:  # noqa: ASYNC110 - log lines arrive on a reader task
                await asyncio.sleep(0.02)
        os.kill(llm, signal.SIGKILL)  # ...and dies as the agent asks it
        crashed.set_result(None)

    async def before_first_turn() -> None:
        asyncio.get_running_loop().create_task(crash_on_the_question())

    options = CallerOptions(
        url=offline_stack.url,
        utterances=(await speech("What are your opening hours?"),),
        before_first_turn=before_first_turn,
        turn_timeout_s=60.0,
    )
    result = await SimulatedCaller(options=options).run()
    await asyncio.wait_for(crashed, 10)
    assert result["ok"], result
    assert (
        result["turns"][0]["agent_text"]
        == SessionOptions(instructions="", greeting="").fallback_line
    )
    call = await stored_call(offline_stack, result["call_id"])
    assert call["status"] == "done"
    assert call["record"]["complete"]
    failed = [e["data"]["stage"] for e in call["record"]["events"] if e["event"] == "stage_failed"]
    assert failed == ["llm"]
    assert "agent_failures" in call["report"]["review_reasons"]
    async with asyncio.timeout(90):
        while restart_count(offline_stack, "local-llm") == restarts:  # noqa: ASYNC110 - log lines arrive on a reader task
            await asyncio.sleep(0.1)
    after = pids(offline_stack)
    assert {n: p for n, p in after.items() if n != "local-llm"} == {
        n: p for n, p in before.items() if n != "local-llm"
    }
    following = await dev_call(offline_stack.url, "What are your opening hours?")
    assert following["turns"][0]["agent_text"]
    assert "having trouble" not in following["turns"][0]["agent_text"]


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
    started = [e for e in events(run, "child.started") if e["child"] == "livekit"]
    assert len(started) == 3  # the first start and two restarts
    [loop] = events(run, "dev.crash_loop")
    assert loop["child"] == "livekit"
    assert loop["returncodes"] == [1, 1, 1]
    assert "livekit exited 3 times" in err.decode()
    assert alive({e["pid"] for e in started}) == set()
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
    async with models, run_dev(tmp_path, OPENAI_BASE_URL=models.base_url, **speech_too) as dev:
        children = descendants(dev.proc.pid)
        call = asyncio.create_task(dev_call(dev.url, "When do you open?"))
        await asyncio.wait_for(models.wait_for_requests(CHAT_PATH, 1), 60)
        dev.proc.send_signal(signal.SIGTERM)
        result = await call
        assert await asyncio.wait_for(dev.proc.wait(), timeout=60) == 0
    assert events(dev, "worker.signal")  # the worker was draining while it answered
    assert result["turns"][0]["agent_text"] == "We open at nine."
    handed = [e for e in events(dev, "postcall.handed_over") if e["call_id"] == result["call_id"]]
    assert len(handed) == 1
    assert handed[0]["complete"]
    assert alive(children) == set()


async def test_killing_the_supervisor_leaves_no_orphans(dev_stack: DevRun) -> None:
    """Even `kill -9` of dev takes its children down with it (parent-death signal)."""
    children = descendants(dev_stack.proc.pid)
    dev_stack.proc.kill()
    await dev_stack.proc.wait()
    deadline = asyncio.get_running_loop().time() + 20
    while alive(children):
        assert asyncio.get_running_loop().time() < deadline, alive(children)
        await asyncio.sleep(0.1)


async def test_dev_with_a_model_server_runs_a_whole_call(tmp_path: Path) -> None:
    """With a model endpoint set, dev runs the agent worker too: `voice-agent call` gets answers."""
    models = ScriptedOpenAI(
        chat=[ChatReply(text="We open at nine.")],
        transcriptions=[TranscriptionReply(text="When do you open?")],
    )
    speech_too = {"VOICE_AGENT_STT": "openai", "VOICE_AGENT_TTS": "openai"}
    async with models, run_dev(tmp_path, OPENAI_BASE_URL=models.base_url, **speech_too) as dev:
        children = descendants(dev.proc.pid)
        assert len(children) >= 4, children  # livekit, redis, token service, agent worker
        result = await dev_call(dev.url, "When do you open?")
        assert result["turns"][0]["agent_text"] == "We open at nine."
        dev.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(dev.proc.wait(), timeout=60) == 0
    assert alive(children) == set()
