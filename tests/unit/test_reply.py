"""An agent reply with fakes on a scripted timeline, spoken into a real, unpublished AudioSource."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.reply import AgentReply, ReplyFailedError
from voice_agent.agent.speaker import FRAME_MS, AgentSpeaker
from voice_agent.agent.spoken import SpokenOutput
from voice_agent.chat import ChatMessage
from voice_agent.exceptions import ProviderResponseError
from voice_agent.providers.fake import (
    CallOutcome,
    FakeCompletion,
    FakeLLM,
    FakeSpeech,
    FakeTimeline,
    FakeTTS,
)
from voice_agent.providers.retry import RetryingLLM, RetryingTTS

SENTENCES = [
    "Our office opens at nine in the morning.",
    "It closes at five in the afternoon.",
    "On Saturdays we open from ten until two.",
    "We are closed on Sundays and public holidays.",
]


@pytest.fixture
async def speaker() -> AsyncIterator[AgentSpeaker]:
    speaker, _track = AgentSpeaker.create()
    speaker.start()
    yield speaker
    await speaker.aclose()


def _reply(
    speaker: AgentSpeaker, llm: FakeLLM, tts: FakeTTS, *, timeout_s: float = 2.0
) -> AgentReply:
    """A reply whose providers are retried and timed as the worker's are (`build_providers`)."""
    timer = TurnTimer(turn=1)
    output = SpokenOutput(
        speaker=speaker, tts=RetryingTTS(tts, silence_timeout_s=timeout_s), timer=timer
    )
    return AgentReply(
        output=output,
        llm=RetryingLLM(llm, silence_timeout_s=timeout_s),
        timer=timer,
        messages=[ChatMessage.user("When are you open?")],
    )


async def test_first_audio_plays_before_the_model_has_finished(speaker: AgentSpeaker) -> None:
    """Streaming overlap: the first sentence is spoken while the LLM still writes the rest."""
    slow = FakeTimeline(chunk_delay_s=0.05)  # ~30 words: about 1.5 s of writing
    llm = FakeLLM([FakeCompletion(text=" ".join(SENTENCES), timeline=slow)])
    tts = FakeTTS()
    reply = _reply(speaker, llm, tts)
    outcome = await reply.run()
    timer = reply.timer
    assert timer.llm_started is not None and timer.first_audio is not None
    words = len(" ".join(SENTENCES).split())
    llm_cannot_finish_before = timer.llm_started + (words - 1) * 0.05
    assert timer.first_audio < llm_cannot_finish_before - 0.5
    assert [c.text for c in tts.calls] == SENTENCES  # one TTS request per sentence, in order
    assert outcome.text == " ".join(SENTENCES)


async def test_cancelled_reply_records_only_what_was_heard(speaker: AgentSpeaker) -> None:
    """Barge-in: cancelling mid-reply stops the stream; the heard text is a strict prefix."""
    llm = FakeLLM([FakeCompletion(text=" ".join(SENTENCES))])
    tts = FakeTTS()
    reply = _reply(speaker, llm, tts)
    task = asyncio.create_task(reply.run())
    heard_audio = asyncio.Event()
    reply.on_first_output = lambda _: heard_audio.set()
    await asyncio.wait_for(heard_audio.wait(), 5)
    await asyncio.sleep(1.2)  # let about a sentence and a half play
    speaker.stop()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    heard = reply.heard_text()
    full = " ".join(SENTENCES)
    assert heard and full.startswith(heard) and len(heard) < len(full)
    assert not speaker.speaking


async def test_pause_and_resume_play_every_frame(speaker: AgentSpeaker) -> None:
    """A false interruption: paused speech resumes where it stopped and nothing is lost."""
    llm = FakeLLM([FakeCompletion(text=SENTENCES[0])])
    tts = FakeTTS([FakeSpeech(duration_s=1.0)])
    reply = _reply(speaker, llm, tts)
    started = asyncio.Event()
    reply.on_first_output = lambda _: started.set()
    task = asyncio.create_task(reply.run())
    await asyncio.wait_for(started.wait(), 5)
    await asyncio.sleep(0.3)
    speaker.pause()
    assert not speaker.speaking
    await asyncio.sleep(0.3)
    assert not task.done()  # held, not finished, while paused
    speaker.resume()
    outcome = await asyncio.wait_for(task, 5)
    assert outcome.heard == SENTENCES[0]
    # All of it, to within the padding of the last frame.
    assert 1.0 <= speaker.played_seconds(0) < 1.0 + FRAME_MS / 1000


async def test_llm_failure_before_any_text_is_retried_once(speaker: AgentSpeaker) -> None:
    """A retryable model error before the first token: one retry, then the reply goes on."""
    error = ProviderResponseError("boom", provider="fake.llm", status=503)
    llm = FakeLLM(
        [
            FakeCompletion(text="never", timeline=FakeTimeline(error=error)),
            FakeCompletion(text=SENTENCES[0]),
        ]
    )
    outcome = await _reply(speaker, llm, FakeTTS()).run()
    assert outcome.text == SENTENCES[0]
    assert [c.outcome for c in llm.calls] == [CallOutcome.FAILED, CallOutcome.COMPLETED]


async def test_llm_failing_twice_names_the_stage(speaker: AgentSpeaker) -> None:
    """The retry failing too raises ReplyFailedError("llm") for the session's fallback line."""
    error = ProviderResponseError("boom", provider="fake.llm", status=500)
    failing = FakeCompletion(text="x", timeline=FakeTimeline(error=error))
    with pytest.raises(ReplyFailedError) as raised:
        await _reply(speaker, FakeLLM([failing, failing]), FakeTTS()).run()
    assert raised.value.stage == "llm"


async def test_tts_that_goes_silent_times_out_and_fails_the_reply(speaker: AgentSpeaker) -> None:
    """A TTS stream that stalls is cut by the provider timeout (and retried once)."""
    stall = FakeSpeech(timeline=FakeTimeline(stall_after=0))
    tts = FakeTTS([stall, stall])
    reply = _reply(speaker, FakeLLM([FakeCompletion(text="Hello there.")]), tts, timeout_s=0.2)
    with pytest.raises(ReplyFailedError) as raised:
        await reply.run()
    assert raised.value.stage == "tts"
    assert len(tts.calls) == 2
