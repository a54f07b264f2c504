"""An agent reply with fakes on a scripted timeline, spoken into a real, unpublished AudioSource,
or, where playout timing is the point, into a virtual one the test plays out frame by frame."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.virtual_audio import VirtualSource, settle, virtual_speaker
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


@pytest.fixture
async def virtual() -> AsyncIterator[tuple[AgentSpeaker, VirtualSource]]:
    """A speaker whose audio plays only as the test plays it (virtual time)."""
    speaker, source = virtual_speaker()
    speaker.start()
    yield speaker, source
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
    assert timer.llm_started is not None
    assert timer.first_audio is not None
    words = len(" ".join(SENTENCES).split())
    llm_cannot_finish_before = timer.llm_started + (words - 1) * 0.05
    assert timer.first_audio < llm_cannot_finish_before - 0.5
    assert [c.text for c in tts.calls] == SENTENCES  # one TTS request per sentence, in order
    assert outcome.text == " ".join(SENTENCES)


async def test_cancelled_reply_records_only_what_was_heard(
    virtual: tuple[AgentSpeaker, VirtualSource],
) -> None:
    """Barge-in: cancelling mid-reply stops the stream; the heard text is what was played."""
    speaker, source = virtual
    llm = FakeLLM([FakeCompletion(text=" ".join(SENTENCES))])
    reply = _reply(speaker, llm, FakeTTS())
    task = asyncio.create_task(reply.run())
    await source.play(1.2)  # 1.2 s of the first sentence's 2.67 s
    speaker.stop()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    words = SENTENCES[0].split()
    assert reply.heard_text() == " ".join(words[: int(len(words) * 1.2 / 2.67)])
    assert not speaker.speaking


async def test_pause_and_resume_play_every_frame(
    virtual: tuple[AgentSpeaker, VirtualSource],
) -> None:
    """A false interruption: paused speech stays silent however long the pause, then resumes
    where it stopped and nothing is lost."""
    speaker, source = virtual
    llm = FakeLLM([FakeCompletion(text=SENTENCES[0])])
    tts = FakeTTS([FakeSpeech(duration_s=1.0)])
    reply = _reply(speaker, llm, tts)
    task = asyncio.create_task(reply.run())
    await source.play(0.3)
    speaker.pause()
    assert not speaker.speaking
    await settle()  # a frame already on its way to the room still lands, as with LiveKit's
    handed_over = source.captured
    await source.play(2.0)  # twice what is left: without the pause all of it would play
    assert source.captured == handed_over  # nothing more reached the room
    assert source.played_s <= 0.3 + 2 * FRAME_MS / 1000
    assert not task.done()  # held, not finished, while paused
    speaker.resume()
    await source.play(2.0)
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
