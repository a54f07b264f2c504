"""The listener fed plain PCM in virtual time: real Silero VAD, no room."""

from __future__ import annotations

import pytest

from voice_agent.agent.listener import FRAME_MS, SAMPLE_RATE, Listener
from voice_agent.agent.turn_taking import (
    Heard,
    OnsetPending,
    SpeechContinues,
    SpeechEnded,
    SpeechStarted,
)
from voice_agent.caller.audio import ROOM_RATE, resample, synthesize
from voice_agent.pipeline.vad_model import SileroVadModel

FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2
START = 1000.0  # the virtual moment the first frame arrives


async def _speech(text: str) -> bytes:
    """`text` spoken by espeak-ng, at the listener's rate."""
    return resample((await synthesize(text)).pcm, ROOM_RATE, SAMPLE_RATE)


def _feed(listener: Listener, pcm: bytes) -> list[Heard]:
    """Push `pcm` frame by frame, each arriving FRAME_MS after the one before (virtual time)."""
    heard: list[Heard] = []
    for i in range(0, len(pcm), FRAME_BYTES):
        at = START + (i // FRAME_BYTES + 1) * FRAME_MS / 1000  # when the frame's end arrived
        heard += listener.push(pcm[i : i + FRAME_BYTES], at=at)
    return heard


@pytest.fixture(scope="module")
async def question() -> bytes:
    """Half a second of silence, a question, then a second of silence."""
    silence = bytes(SAMPLE_RATE)  # 0.5 s of 16-bit samples
    return silence + await _speech("What are your opening hours on Saturday?") + silence * 2


async def test_an_utterance_starts_continues_and_ends_with_its_audio(question: bytes) -> None:
    """One SpeechStarted, SpeechContinues while it lasts, one SpeechEnded holding the speech."""
    listener = Listener(model=SileroVadModel(), pause_ms=500, agent_audible=lambda: False)
    heard = _feed(listener, question)
    starts = [e for e in heard if isinstance(e, SpeechStarted)]
    ends = [e for e in heard if isinstance(e, SpeechEnded)]
    assert len(starts) == 1
    assert len(ends) == 1
    [start], [end] = starts, ends
    continuing = [e for e in heard if isinstance(e, SpeechContinues)]
    assert continuing
    assert all(start.at <= e.at <= end.at for e in continuing)
    assert [e.speech_s for e in continuing] == sorted(e.speech_s for e in continuing)
    assert 1.5 < end.speech_s < 3.5
    assert len(end.audio) / 2 / SAMPLE_RATE >= end.speech_s
    assert end.evidence.trailing_silence_s == pytest.approx(0.5, abs=0.07)


async def test_moments_come_from_arrival_times_not_detection(question: bytes) -> None:
    """The onset is dated when its audio arrived (before it was detected); the end likewise."""
    listener = Listener(model=SileroVadModel(), pause_ms=500, agent_audible=lambda: False)
    heard = _feed(listener, question)
    [start] = [e for e in heard if isinstance(e, SpeechStarted)]
    [end] = [e for e in heard if isinstance(e, SpeechEnded)]
    assert START + 0.4 < start.onset_at < start.at  # speech begins after the 0.5 s of silence
    assert end.started_at == start.onset_at
    assert end.ended_at < end.at - 0.4  # decided after the trailing silence
    assert end.ended_at - end.started_at == pytest.approx(end.speech_s, abs=FRAME_MS / 1000)


async def test_the_onset_says_whether_the_agent_was_audible(question: bytes) -> None:
    """SpeechStarted carries the agent's audibility at that moment (asked, not remembered)."""
    audible = [True]
    listener = Listener(model=SileroVadModel(), pause_ms=500, agent_audible=lambda: audible[0])
    [start] = [e for e in _feed(listener, question) if isinstance(e, SpeechStarted)]
    assert start.agent_audible
    audible[0] = False
    listener = Listener(model=SileroVadModel(), pause_ms=500, agent_audible=lambda: audible[0])
    [start] = [e for e in _feed(listener, question) if isinstance(e, SpeechStarted)]
    assert not start.agent_audible


def test_silence_is_heard_as_nothing() -> None:
    """Seconds of digital silence produce no speech event."""
    listener = Listener(model=SileroVadModel(), pause_ms=500, agent_audible=lambda: False)
    assert _feed(listener, bytes(SAMPLE_RATE * 2 * 3)) == []


async def test_a_resumption_is_heard_as_pending_voice_before_it_is_speech() -> None:
    """A comma pause longer than the listener's pause: the utterance ends, then the resumed voice
    is reported pending (before the VAD confirms it as speech) and cleared once it is speech."""
    silence = bytes(SAMPLE_RATE)
    pcm = silence + await _speech("My VPN keeps dropping, what can I do?") + silence * 2
    listener = Listener(model=SileroVadModel(), pause_ms=120, agent_audible=lambda: False)
    heard = _feed(listener, pcm)
    kinds = [
        type(e).__name__ + (f"({e.pending})" if isinstance(e, OnsetPending) else "")
        for e in heard
        if not isinstance(e, SpeechContinues)
    ]
    ends = [i for i, k in enumerate(kinds) if k == "SpeechEnded"]
    assert len(ends) == 2, kinds  # split at the comma
    resumed = kinds[ends[0] + 1 :]
    assert resumed[:3] == ["OnsetPending(True)", "SpeechStarted", "OnsetPending(False)"], kinds
