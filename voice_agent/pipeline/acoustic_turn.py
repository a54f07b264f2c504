"""End of turn from the sound of the speech: Smart Turn alone, or with the transcript rules.

`SmartTurnDetector` asks the acoustic model (`smart_turn.py`) whether the turn's audio sounds
finished: P(end) at or over `threshold` ends the turn now; under it the turn waits for
`incomplete_silence_ms` of silence, the silence rule's fallback. Without audio it waits
`silence_ms`, like the silence detector.

`HybridTurnDetector` reads the words first (`completeness.py`):

- the rules say unfinished ("my number is"), or there are no words: the rules decide, without
  asking the model;
- the rules say complete and so does the model: the rules decide (the turn ends once their
  commit silence has passed);
- the rules say complete and the model does not: unsure, wait `unsure_silence_ms`.

The session tells the hybrid detector the turn's audio as soon as the caller pauses
(`listen_ahead`), before the words are known, so the model runs while the speech is being
transcribed and its answer is usually ready when the words arrive.

A model that fails (a broken file found only when loading it) answers nothing: both detectors
then decide as the transcript rules would, and say so in the decision's reason. The model runs
in a thread; the event loop never waits on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from voice_agent.exceptions import TurnModelError
from voice_agent.pipeline.completeness import TranscriptTurnDetector
from voice_agent.pipeline.smart_turn import EndOfTurnModel
from voice_agent.pipeline.turn import TurnDecision, TurnEvidence

__all__ = ["HybridTurnDetector", "SmartTurnDetector"]


def _wait(total_s: float, evidence: TurnEvidence, reason: str, p: float | None) -> TurnDecision:
    """End once `total_s` of silence has passed, else ask to be rechecked then."""
    remaining = total_s - evidence.trailing_silence_s
    if remaining <= 1e-9:
        return TurnDecision(end_of_turn=True, probability=p, reason=f"{reason}_silence")
    return TurnDecision(end_of_turn=False, recheck_after_s=remaining, probability=p, reason=reason)


class _ModelDetector:
    def __init__(
        self,
        *,
        model: EndOfTurnModel,
        threshold: float,
        silence_ms: int,
        incomplete_silence_ms: int,
        complete_silence_ms: int = 0,
        punctuated: bool | None = False,
        min_confidence: float = 0.0,
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError("threshold must be within [0, 1]")
        if min(silence_ms, incomplete_silence_ms) < 0:
            raise ValueError("silences must not be negative")
        self._model = model
        self._threshold = threshold
        self._silence_s = silence_ms / 1000
        self._incomplete_s = max(incomplete_silence_ms, silence_ms) / 1000
        self._rules = TranscriptTurnDetector(
            silence_ms=silence_ms,
            incomplete_silence_ms=incomplete_silence_ms,
            complete_silence_ms=complete_silence_ms,
            punctuated=punctuated,
            min_confidence=min_confidence,
        )

    async def _probability(self, audio: bytes) -> float | None:
        try:
            return await self._model.end_probability(audio)
        except TurnModelError:
            return None

    async def _by_rules(self, evidence: TurnEvidence) -> TurnDecision:
        decision = await self._rules.decide(evidence)
        return TurnDecision(
            end_of_turn=decision.end_of_turn,
            recheck_after_s=decision.recheck_after_s,
            reason=f"model_failed_{decision.reason}",
        )


class SmartTurnDetector(_ModelDetector):
    """The acoustic model alone (see the module docstring)."""

    async def decide(self, evidence: TurnEvidence) -> TurnDecision:
        """End of turn when the model hears one, else wait for the longer silence."""
        if evidence.speaking:
            return TurnDecision(end_of_turn=False, reason="speaking")
        if not evidence.audio:
            return _wait(self._silence_s, evidence, "no_audio", None)
        p = await self._probability(evidence.audio)
        if p is None:
            return await self._by_rules(evidence)
        if p >= self._threshold:
            return TurnDecision(end_of_turn=True, probability=p, reason="model_complete")
        return _wait(self._incomplete_s, evidence, "model_incomplete", p)


class HybridTurnDetector(_ModelDetector):
    """The transcript rules and the acoustic model together (see the module docstring)."""

    reads_transcript = True
    """The session asks this detector with the speculative transcript of the turn so far."""

    def __init__(
        self,
        *,
        model: EndOfTurnModel,
        threshold: float,
        silence_ms: int,
        incomplete_silence_ms: int,
        unsure_silence_ms: int,
        complete_silence_ms: int = 0,
        punctuated: bool | None = False,
        min_confidence: float = 0.0,
    ) -> None:
        super().__init__(
            model=model,
            threshold=threshold,
            silence_ms=silence_ms,
            incomplete_silence_ms=incomplete_silence_ms,
            complete_silence_ms=complete_silence_ms,
            punctuated=punctuated,
            min_confidence=min_confidence,
        )
        if unsure_silence_ms < 0:
            raise ValueError("silences must not be negative")
        self._unsure_s = unsure_silence_ms / 1000
        self._ahead: tuple[bytes, asyncio.Future[float | None]] | None = None

    def listen_ahead(self, audio: bytes) -> asyncio.Future[float | None] | None:
        """Start the model on the turn's `audio` now; `decide` on the same audio awaits it."""
        if self._ahead is not None:
            self._ahead[1].cancel()
        self._ahead = (audio, asyncio.ensure_future(self._probability(audio))) if audio else None
        return self._ahead[1] if self._ahead is not None else None

    def close(self) -> None:
        """The call is over: cancel a model run `listen_ahead` started and no decision took."""
        if self._ahead is not None:
            self._ahead[1].cancel()
            self._ahead = None

    async def _probability_of(self, audio: bytes) -> float | None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] is audio:
            return await ahead[1]
        if ahead is not None:
            ahead[1].cancel()
        return await self._probability(audio)

    async def decide(self, evidence: TurnEvidence) -> TurnDecision:
        """End now when words and sound agree it is over; otherwise wait (see the module)."""
        if evidence.speaking:
            return TurnDecision(end_of_turn=False, reason="speaking")
        if not self._rules.complete(evidence.transcript):
            return await self._rules.decide(evidence)
        p = await self._probability_of(evidence.audio) if evidence.audio else None
        if p is None:
            return await self._by_rules(evidence)
        if p >= self._threshold:
            return replace(await self._rules.decide(evidence), probability=p)
        return _wait(self._unsure_s, evidence, "unsure", p)
