"""Turn detection: the silence default, and the seam a turn-detection model plugs into."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voice_agent.pipeline.turn import (
    SilenceTurnDetector,
    TurnDecision,
    TurnDetector,
    TurnEvidence,
)
from voice_agent.pipeline.vad import VadConfig, VadEventType, VoiceActivityDetector


class StepModel:
    """A speech-probability fake: voiced for the first `voiced` windows, silent after."""

    window_samples = 512

    def __init__(self, voiced: int) -> None:
        self._voiced = voiced
        self._calls = 0

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        self._calls += 1
        return 0.9 if self._calls <= self._voiced else 0.0

    def reset(self) -> None:
        self._calls = 0


class PunctuationTurnDetector:
    """A stand-in for a semantic model: a turn ends only on a finished sentence."""

    async def decide(self, evidence: TurnEvidence) -> TurnDecision:
        done = evidence.transcript.rstrip().endswith((".", "?", "!"))
        if done and evidence.trailing_silence_s >= 0.2:
            return TurnDecision(end_of_turn=True, probability=0.9, reason="complete")
        return TurnDecision(end_of_turn=False, recheck_after_s=0.5, probability=0.2)


async def test_silence_at_the_threshold_ends_the_turn() -> None:
    """500 ms of silence after speech is the end of the turn."""
    decision = await SilenceTurnDetector().decide(TurnEvidence(trailing_silence_s=0.5))
    assert decision.end_of_turn
    assert decision.reason == "silence"


async def test_shorter_silence_waits_and_says_how_long() -> None:
    """200 ms of silence waits, asking to be consulted again after the remaining 300 ms."""
    decision = await SilenceTurnDetector().decide(TurnEvidence(trailing_silence_s=0.2))
    assert not decision.end_of_turn
    assert decision.recheck_after_s == pytest.approx(0.3)


async def test_a_speaking_caller_never_ends_the_turn() -> None:
    """While the VAD hears speech the answer is wait, whatever the silence says."""
    evidence = TurnEvidence(trailing_silence_s=5.0, speaking=True, transcript="Hello.")
    decision = await SilenceTurnDetector().decide(evidence)
    assert not decision.end_of_turn
    assert decision.reason == "speaking"


async def test_the_threshold_is_configurable() -> None:
    """min_silence_ms moves the point where the turn ends."""
    detector = SilenceTurnDetector(min_silence_ms=800)
    assert detector.min_silence_s == 0.8
    assert not (await detector.decide(TurnEvidence(trailing_silence_s=0.6))).end_of_turn
    assert (await detector.decide(TurnEvidence(trailing_silence_s=0.8))).end_of_turn


async def test_a_vad_speech_end_is_an_end_of_turn_for_the_default() -> None:
    """Evidence built from the VAD's SPEECH_END ends the turn with the same silence setting."""
    config = VadConfig(min_silence_ms=500, silence_floor_dbfs=None)  # the model scores all
    vad = VoiceActivityDetector(config=config, model=StepModel(voiced=20))
    events = vad.push(bytes(2 * 512 * 40))
    assert [e.type for e in events] == [VadEventType.SPEECH_START, VadEventType.SPEECH_END]
    evidence = TurnEvidence.from_speech_end(events[1], transcript="book a table")
    assert evidence.trailing_silence_s >= 0.5
    assert evidence.audio == events[1].audio
    assert evidence.transcript == "book a table"
    detector = SilenceTurnDetector(min_silence_ms=config.min_silence_ms)
    assert (await detector.decide(evidence)).end_of_turn


async def test_another_detector_plugs_into_the_same_seam() -> None:
    """Any object with an async decide() is a TurnDetector and can replace the default."""
    detectors: list[TurnDetector] = [SilenceTurnDetector(), PunctuationTurnDetector()]
    assert all(isinstance(d, TurnDetector) for d in detectors)
    unfinished = TurnEvidence(transcript="I would like to", trailing_silence_s=0.6)
    answers = [(await d.decide(unfinished)).end_of_turn for d in detectors]
    assert answers == [True, False]


def test_negative_silence_is_rejected() -> None:
    """A negative threshold raises ValueError."""
    with pytest.raises(ValueError, match="must not be negative"):
        SilenceTurnDetector(min_silence_ms=-1)
