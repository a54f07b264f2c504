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

# Whisper runs on the CPU the rest of the suite shares: a 30 s provider timeout (the stack's test
# default is 5 s), as this test checks that local speech works, not how fast it is.
LOCAL_SPEECH = {"stt": "local", "tts": "local", "provider_timeout_s": 30.0}


async def test_call_on_local_stt_and_tts(livekit_server: LiveKitEndpoint, tmp_path: Path) -> None:
    """Local STT transcribes the spoken question; local TTS answers audibly; no STT/TTS requests
    reach the (scripted) model server, which only plays the LLM."""
    models = ScriptedOpenAI(chat=[ChatReply(text="We are open from nine to five.")])
    async with (
        models,
        voice_stack(livekit_server, tmp_path, models=models, **LOCAL_SPEECH) as stack,
    ):
        result = await stack.call(await speech("What are your opening hours?"), turn_timeout_s=60)
        async with asyncio.timeout(15):
            while stack.worker.active_jobs:  # noqa: ASYNC110 - polled worker state
                await asyncio.sleep(0.05)
    assert result["ok"], result
    [turn] = result["turns"]
    heard = turn["user_text"].lower()
    assert "opening" in heard
    assert "hours" in heard
    assert turn["agent_text"] == "We are open from nine to five."
    assert result["agent_audio_seconds"] > 2.0
    assert models.requests_to("/v1/audio/transcriptions") == []
    assert models.requests_to("/v1/audio/speech") == []
    assert turn["metrics"]["stt_ms"] > 0
    assert turn["metrics"]["tts_ttfb_ms"] > 0


async def test_tts_failing_mid_service_hands_over_to_the_local_fallback(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The primary TTS answers 500 to everything: Piper, the configured fallback, speaks."""
    from voice_agent.providers.fallback import FALLBACKS
    from voice_agent.testing.openai_script import ErrorReply, TranscriptionReply

    before = FALLBACKS.labels(stage="tts")._value.get()
    models = ScriptedOpenAI(
        chat=[ChatReply(text="We are open from nine to five.")],
        transcriptions=[TranscriptionReply(text="What are your opening hours?")],
        speech=[ErrorReply(status=500, type="invalid_request_error")] * 50,
    )
    async with (
        models,
        voice_stack(livekit_server, tmp_path, models=models, tts_fallback="local") as stack,
    ):
        result = await stack.call(await speech("What are your opening hours?"), turn_timeout_s=60)
        async with asyncio.timeout(15):
            while stack.worker.active_jobs:  # noqa: ASYNC110 - polled worker state
                await asyncio.sleep(0.05)
    assert result["ok"], result
    assert result["turns"][0]["agent_text"] == "We are open from nine to five."
    assert result["agent_audio_seconds"] > 2.0  # greeting and answer, spoken by Piper
    assert models.requests_to("/v1/audio/speech")  # the primary was tried
    assert FALLBACKS.labels(stage="tts")._value.get() >= before + 2
