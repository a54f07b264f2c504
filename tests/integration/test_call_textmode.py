"""Text through real calls: typed chat answered in a LiveKit call, and a conversation test run
with `voice-agent test --voice` (its own LiveKit server, the worker, espeak-ng speech)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.helpers import strip_project_env
from tests.integration.stack import voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
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
