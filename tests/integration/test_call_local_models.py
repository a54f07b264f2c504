"""A real call on the local speech models: Whisper hears the caller, Piper speaks the answer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.integration.stack import speech, voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration


async def test_call_on_local_stt_and_tts(livekit_server: LiveKitEndpoint, tmp_path: Path) -> None:
    """Local STT transcribes the spoken question; local TTS answers audibly; no STT/TTS requests
    reach the (scripted) model server, which only plays the LLM."""
    models = ScriptedOpenAI(chat=[ChatReply(text="We are open from nine to five.")])
    async with (
        models,
        voice_stack(
            livekit_server, tmp_path, models=models, stt_provider="local", tts_provider="local"
        ) as stack,
    ):
        result = await stack.call(await speech("What are your opening hours?"), turn_timeout_s=60)
        async with asyncio.timeout(15):
            while stack.worker.active_jobs:  # noqa: ASYNC110 - polled worker state
                await asyncio.sleep(0.05)
    assert result["ok"], result
    [turn] = result["turns"]
    heard = turn["user_text"].lower()
    assert "opening" in heard and "hours" in heard
    assert turn["agent_text"] == "We are open from nine to five."
    assert result["agent_audio_seconds"] > 2.0
    assert models.requests_to("/v1/audio/transcriptions") == []
    assert models.requests_to("/v1/audio/speech") == []
    assert turn["metrics"]["stt_ms"] > 0 and turn["metrics"]["tts_ttfb_ms"] > 0
