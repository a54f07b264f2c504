"""Text through real parts: typed chat answered in a LiveKit call, a conversation test run with
`voice-agent test --voice` (its own LiveKit server, the worker, espeak-ng speech), and a chat
session's record handed to the post-call queue in Redis."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import strip_project_env
from tests.integration.postcall_support import fresh_redis, postcall_settings
from tests.integration.stack import voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.postcall.handover import PostCallSink
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def test_typed_chat_in_a_call_is_answered_aloud_once_and_recorded_as_typed(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The caller types on lk.chat (and sends the legacy copy, as LiveKit's components do):
    one spoken, captioned answer, and a transcript turn marked typed."""
    models = ScriptedOpenAI(chat=[ChatReply(text="We open at nine.")])
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        result = await stack.call(typed=("What are your hours?",))
        async with asyncio.timeout(15):
            while not stack.sink.records:  # noqa: ASYNC110 - polled with a deadline
                await asyncio.sleep(0.05)
    assert result["ok"], result
    [turn] = result["turns"]
    assert (turn["user_text"], turn["agent_text"]) == ("What are your hours?", "We open at nine.")
    assert result["agent_audio_seconds"] > 0
    assert {"speaker": "agent", "text": "We open at nine.", "final": True} in result["captions"]
    [chat] = models.requests_to(CHAT_PATH)  # the legacy copy was not answered again
    assert chat.json["messages"][-1] == {"role": "user", "content": "What are your hours?"}
    [record] = stack.sink.records.values()
    assert [(t.speaker, t.typed) for t in record.transcript] == [
        ("agent", False),
        ("user", True),
        ("agent", False),
    ]


async def test_voice_agent_test_voice_runs_a_conversation_through_a_real_call() -> None:
    """`voice-agent test --voice` on the confirmed-ticket conversation passes: the caller
    speaks, confirms in the app, and the tool check sees the worker's audit."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voice_agent",
        "test",
        "--voice",
        "tests/conversations/ticket_confirmed.toml",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=strip_project_env(dict(os.environ)),
        cwd=ROOT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    output = out.decode()
    assert process.returncode == 0, output
    assert "PASS tests/conversations/ticket_confirmed.toml" in output
    assert "(voice, scripted model)" in output
    assert "PASS turn 1: tool create_ticket title='VPN down', priority='high' -> ok" in output


async def test_chat_with_post_call_hands_the_record_to_the_queue(
    redis_url: str, tmp_path: Path
) -> None:
    """`voice-agent chat --post-call`: the session's record reaches the post-call queue (and
    is not kept as a local file)."""
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path / "data", url, None)
    async with ScriptedOpenAI(chat=[ChatReply(text="Hello from the help desk.")]) as models:
        env = strip_project_env(dict(os.environ)) | {
            "OPENAI_API_KEY": "test",
            "OPENAI_BASE_URL": models.base_url,
            "REDIS_URL": url,
            "VOICE_AGENT_DATA_DIR": str(settings.data_dir),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "voice_agent", "chat", "--post-call",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(b"Hello\n/quit\n"), 60)
    assert process.returncode == 0, err.decode()
    output = out.decode()
    call_id = output.split()[1]
    assert "agent: Hello from the help desk." in output
    async with PostCallSink.from_settings(settings) as sink:
        queued = await sink.queue.get_record(call_id)
    assert queued is not None
    assert [(t.speaker, t.typed) for t in queued.record.transcript] == [
        ("agent", False),
        ("user", True),
        ("agent", False),
    ]
    assert not (settings.data_dir / "chat" / "records").exists()
