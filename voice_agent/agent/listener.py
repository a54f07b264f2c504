"""The caller's audio in: PCM with its arrival times, through the VAD, out as speech events.

A `Listener` is fed the caller's microphone as 16 kHz 16-bit mono PCM, each chunk with the
monotonic moment it arrived: the room's audio stream on a call, plain bytes in a test. It keeps an
`ArrivalClock`, so stream positions map back to moments, and turns the VAD's events into the
turn-taking machine's: speech started (with whether the agent was audible then), speech continuing
(every chunk while the caller speaks, with how long they have spoken up to their last voiced
audio, for the interruption threshold: the silence that may end the utterance does not count) and
speech ended (with the utterance's audio and the evidence the turn detector needs).
"""

from __future__ import annotations

from collections.abc import Callable

from voice_agent.agent.arrival_clock import ArrivalClock
from voice_agent.agent.turn_taking import (
    Heard,
    OnsetPending,
    SpeechContinues,
    SpeechEnded,
    SpeechStarted,
)
from voice_agent.pipeline.turn import TurnEvidence
from voice_agent.pipeline.vad import SAMPLE_RATE as VAD_RATE
from voice_agent.pipeline.vad import (
    SpeechProbabilityModel,
    VadConfig,
    VadEvent,
    VadEventType,
    VoiceActivityDetector,
)

SAMPLE_RATE = VAD_RATE
"""The rate the listener takes (the VAD's)."""

FRAME_MS = 64
"""Microphone audio is taken in 64 ms frames (two VAD windows): a third of the per-frame work of
20 ms frames, at a cost of at most 64 ms more delay in noticing speech (barge-in, measured from the
speech itself, stays under 150 ms at p95; docs/benchmarks.md)."""

PAUSE_ONSET_MS = 96
"""Voiced audio needed before the agent pauses for the caller: short, so barge-in is fast."""


class Listener:
    """Hears one caller: VAD over their PCM, moments from an arrival clock."""

    def __init__(
        self,
        *,
        model: SpeechProbabilityModel,
        pause_ms: int,
        agent_audible: Callable[[], bool],
    ) -> None:
        """`pause_ms`: the silence that ends an utterance (the turn detector may wait for more)."""
        config = VadConfig(min_speech_ms=PAUSE_ONSET_MS, min_silence_ms=pause_ms)
        self._vad = VoiceActivityDetector(config=config, model=model)
        self._clock = ArrivalClock(sample_rate=SAMPLE_RATE)
        self._agent_audible = agent_audible
        self._received = 0  # samples pushed so far
        self._pending = False  # the VAD hears voice it has not confirmed as speech

    def push(self, pcm: bytes, *, at: float) -> list[Heard]:
        """Feed the PCM that arrived at `at`; the speech events it completes, in order."""
        self._received += len(pcm) // 2
        self._clock.mark(self._received, at)
        heard = [self._convert(event, at) for event in self._vad.push(pcm)]
        if self._vad.pending != self._pending:
            self._pending = self._vad.pending
            heard.append(OnsetPending(at=at, pending=self._pending))
        if self._vad.speaking:
            heard.append(SpeechContinues(at=at, speech_s=self._vad.voiced_s))
        return heard

    def _convert(self, event: VadEvent, at: float) -> Heard:
        onset = self._clock.at(event.speech_start_sample)
        if event.type is VadEventType.SPEECH_START:
            return SpeechStarted(at=at, onset_at=onset, agent_audible=self._agent_audible())
        assert event.speech_end_sample is not None
        assert event.end_s is not None
        return SpeechEnded(
            at=at,
            started_at=onset,
            ended_at=self._clock.at(event.speech_end_sample - 1),
            speech_s=event.end_s - event.start_s,
            audio=event.audio,
            evidence=TurnEvidence.from_speech_end(event),
        )
