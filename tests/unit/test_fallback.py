"""Fallback chains: the secondary takes over only while that is safe, and the switch is counted."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from voice_agent.chat import ChatMessage
from voice_agent.exceptions import ProviderResponseError
from voice_agent.providers.base import PcmAudio
from voice_agent.providers.fake import (
    FakeCompletion,
    FakeLLM,
    FakeSpeech,
    FakeSTT,
    FakeTimeline,
    FakeTranscription,
    FakeTTS,
)
from voice_agent.providers.fallback import FALLBACKS, FallbackLLM, FallbackSTT, FallbackTTS

BOOM = ProviderResponseError("down", provider="fake", status=503)
FAILING = FakeTimeline(error=BOOM)
MESSAGES = [ChatMessage.user("hi")]


def _count(stage: str) -> float:
    return FALLBACKS.labels(stage=stage)._value.get()  # type: ignore[no-any-return]


async def _text(llm: FallbackLLM) -> str:
    return "".join([d.text async for d in llm.stream(MESSAGES)])


async def test_llm_failing_before_its_first_token_hands_over_and_is_counted() -> None:
    """A primary error before any output: the secondary answers, one fallback is counted."""
    before = _count("llm")
    chain = FallbackLLM(
        FakeLLM([FakeCompletion(text="never", timeline=FAILING)]),
        FakeLLM([FakeCompletion(text="backup answer")]),
        switch_after_s=1.0,
    )
    with capture_logs() as logs:
        assert await _text(chain) == "backup answer"
    assert _count("llm") == before + 1
    assert [entry["event"] for entry in logs] == ["provider.fallback"]
    assert logs[0]["stage"] == "llm"


async def test_primary_that_stays_silent_is_replaced_after_the_switch_time() -> None:
    """A primary that hangs before its first token counts as failed after `switch_after_s`."""
    stalled = FakeLLM([FakeCompletion(text="late", timeline=FakeTimeline(stall_after=0))])
    chain = FallbackLLM(stalled, FakeLLM([FakeCompletion(text="on time")]), switch_after_s=0.2)
    assert await asyncio.wait_for(_text(chain), 5) == "on time"


async def test_failure_after_output_is_not_switched_mid_answer() -> None:
    """Once the primary has spoken, its failure propagates: no second voice mid-sentence."""
    primary = FakeLLM(
        [FakeCompletion(text="one two three", timeline=FakeTimeline(error=BOOM, fail_after=2))]
    )
    secondary = FakeLLM([FakeCompletion(text="other")])
    chain = FallbackLLM(primary, secondary, switch_after_s=1.0)
    with pytest.raises(ProviderResponseError):
        await _text(chain)
    assert secondary.calls == []


async def test_healthy_primary_never_touches_the_secondary() -> None:
    """With a working primary, the secondary is never asked."""
    secondary = FakeTTS()
    chain = FallbackTTS(FakeTTS([FakeSpeech(duration_s=0.2)]), secondary, switch_after_s=1.0)
    chunks = [c async for c in chain.synthesize("hello")]
    assert sum(c.duration_s for c in chunks) == pytest.approx(0.2, abs=0.03)
    assert secondary.calls == []


async def test_tts_fallback_keeps_the_secondarys_sample_rate() -> None:
    """Audio from the secondary carries its own rate, so the speaker resamples it right."""
    chain = FallbackTTS(
        FakeTTS([FakeSpeech(timeline=FAILING)], sample_rate=24_000),
        FakeTTS([FakeSpeech(duration_s=0.1)], sample_rate=22_050),
        switch_after_s=1.0,
    )
    chunks = [c async for c in chain.synthesize("hello")]
    assert chunks
    assert {c.sample_rate for c in chunks} == {22_050}


async def test_stt_fallback_transcribes_with_the_secondary() -> None:
    """STT: the primary failing gives the secondary's transcript."""
    chain = FallbackSTT(
        FakeSTT([FakeTranscription(text="x", timeline=FAILING)]),
        FakeSTT([FakeTranscription(text="opening hours")]),
        switch_after_s=1.0,
    )
    transcript = await chain.transcribe(PcmAudio(b"\0\0" * 1600, 16_000))
    assert transcript.text == "opening hours"
