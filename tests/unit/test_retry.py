"""The one retry rule: once more on a retryable failure before any output, never after."""

from __future__ import annotations

import pytest

from tests.helpers import make_settings
from voice_agent.chat import ChatMessage
from voice_agent.exceptions import ProviderError, ProviderResponseError, ProviderTimeoutError
from voice_agent.providers.base import PcmAudio
from voice_agent.providers.factory import build_providers
from voice_agent.providers.fake import (
    CallOutcome,
    FakeCompletion,
    FakeLLM,
    FakeSpeech,
    FakeSTT,
    FakeTimeline,
    FakeTranscription,
    FakeTTS,
)
from voice_agent.providers.fallback import FallbackLLM
from voice_agent.providers.retry import (
    RETRIES,
    RetryingLLM,
    RetryingSTT,
    RetryingTTS,
    is_retryable,
)

TRANSIENT = ProviderResponseError("busy", provider="fake", status=503)
PERMANENT = ProviderResponseError("bad request", provider="fake", status=400)
MESSAGES = [ChatMessage.user("hi")]
AUDIO = PcmAudio(bytes(3200), 16_000)


def _retries(stage: str) -> float:
    return RETRIES.labels(stage=stage)._value.get()  # type: ignore[no-any-return]


async def _text(llm: RetryingLLM) -> str:
    return "".join([d.text async for d in llm.stream(MESSAGES)])


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (TimeoutError(), True),
        (ProviderTimeoutError("slow", provider="p"), True),
        (TRANSIENT, True),
        (PERMANENT, False),
        (ValueError("a bug"), False),
    ],
)
def test_retryable_means_a_timeout_or_a_retryable_provider_error(
    error: BaseException, retryable: bool
) -> None:
    """Timeouts and provider errors flagged retryable may be tried again; nothing else."""
    assert is_retryable(error) is retryable


async def test_a_retryable_failure_before_output_is_tried_once_more() -> None:
    """The first completion fails before a token: the second answers, one retry is counted."""
    before = _retries("llm")
    fake = FakeLLM(
        [FakeCompletion("never", timeline=FakeTimeline(error=TRANSIENT)), FakeCompletion("Hello.")]
    )
    assert await _text(RetryingLLM(fake, silence_timeout_s=2)) == "Hello."
    assert [c.outcome for c in fake.calls] == [CallOutcome.FAILED, CallOutcome.COMPLETED]
    assert _retries("llm") == before + 1


async def test_a_failure_after_output_has_started_is_not_retried() -> None:
    """Words already out: a repeat would say them twice, so the error goes to the caller."""
    midway = FakeTimeline(error=TRANSIENT, fail_after=2)
    fake = FakeLLM([FakeCompletion("one two three four", timeline=midway), FakeCompletion("x")])
    seen: list[str] = []

    async def consume() -> None:
        async for delta in RetryingLLM(fake, silence_timeout_s=2).stream(MESSAGES):
            seen.append(delta.text)

    with pytest.raises(ProviderResponseError):
        await consume()
    assert seen == ["one", " two"]
    assert len(fake.calls) == 1


async def test_a_permanent_failure_is_not_retried() -> None:
    """A non-retryable error (HTTP 400) is raised at once."""
    fake = FakeLLM([FakeCompletion("x", timeline=FakeTimeline(error=PERMANENT))] * 2)
    with pytest.raises(ProviderResponseError):
        await _text(RetryingLLM(fake, silence_timeout_s=2))
    assert len(fake.calls) == 1


async def test_only_one_retry_is_made() -> None:
    """Failing twice raises the second error; there is no third try."""
    fake = FakeLLM([FakeCompletion("x", timeline=FakeTimeline(error=TRANSIENT))] * 3)
    with pytest.raises(ProviderResponseError):
        await _text(RetryingLLM(fake, silence_timeout_s=2))
    assert len(fake.calls) == 2


async def test_a_silent_stream_times_out_as_a_provider_timeout_and_is_retried() -> None:
    """No audio within the silence timeout: a ProviderTimeoutError, after one more try."""
    stall = FakeSpeech(timeline=FakeTimeline(stall_after=0))
    fake = FakeTTS([stall, stall])
    with pytest.raises(ProviderTimeoutError):
        _ = [a async for a in RetryingTTS(fake, silence_timeout_s=0.1).synthesize("Hi.")]
    assert [c.outcome for c in fake.calls] == [CallOutcome.CANCELLED, CallOutcome.CANCELLED]


async def test_an_interim_transcript_is_output_so_a_later_failure_is_not_retried() -> None:
    """Interim captions already shown count as output: the STT failure is not retried."""
    partial = FakeTranscription(
        "what are your hours",
        interim=["what"],
        timeline=FakeTimeline(error=TRANSIENT, fail_after=1),
    )
    fake = FakeSTT([partial, FakeTranscription("never")], streaming=True)
    with pytest.raises(ProviderError):
        _ = [e async for e in RetryingSTT(fake, silence_timeout_s=2).transcribe_stream(AUDIO)]
    assert len(fake.calls) == 1


def test_the_factory_retries_each_stage_around_its_fallback_chain() -> None:
    """build_providers: every stage is retried, and a configured fallback sits inside the retry."""
    settings = make_settings(
        openai_api_key="sk-test", stt="openai", tts="openai", llm_fallback="openai"
    )
    providers = build_providers(settings)
    assert isinstance(providers.stt, RetryingSTT)
    assert isinstance(providers.tts, RetryingTTS)
    assert isinstance(providers.llm, RetryingLLM)
    assert isinstance(providers.llm._llm, FallbackLLM)
