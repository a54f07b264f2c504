"""End of turn: has the caller finished, or only paused?

The session asks a `TurnDetector` whenever the evidence changes: the VAD reports SPEECH_END, a
final transcript arrives, or the silence it was told to wait for has passed. The answer is end of
turn, or wait, optionally with how much more silence to wait before asking again. The default,
`SilenceTurnDetector`, ends the turn on silence alone (the VAD's SPEECH_END); a model that reads
the transcript or the audio (a semantic or acoustic end-of-turn model) plugs in behind the same
protocol. `decide` is async so such a model can run in a thread without blocking the call.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from voice_agent.pipeline.vad import VadEvent

__all__ = [
    "SilenceTurnDetector",
    "TurnDecision",
    "TurnDetector",
    "TurnEvidence",
    "close_detector",
    "listen_ahead",
    "reads_transcript",
]


@dataclass(frozen=True, slots=True)
class TurnEvidence:
    """What is known about the caller's turn when the detector is asked."""

    transcript: str = ""
    """What the caller has said in this turn so far (final STT text, possibly partial)."""
    transcript_confidence: float | None = None
    """How sure the STT was of `transcript`, 0-1, when it says (`Transcript.confidence`)."""
    trailing_silence_s: float = 0.0
    """Silence since the caller's speech last ended."""
    speaking: bool = False
    """Whether the VAD hears the caller speaking right now."""
    audio: bytes = b""
    """The turn's audio, 16 kHz mono int16 PCM, for detectors that listen."""

    @classmethod
    def from_speech_end(cls, event: VadEvent, *, transcript: str = "") -> TurnEvidence:
        """Evidence at a VAD SPEECH_END: its trailing silence and segment audio."""
        return cls(
            transcript=transcript,
            trailing_silence_s=event.trailing_silence_s,
            speaking=False,
            audio=event.audio,
        )


@dataclass(frozen=True, slots=True)
class TurnDecision:
    """The detector's answer: end of turn now, or wait."""

    end_of_turn: bool
    recheck_after_s: float | None = None
    """When waiting: ask again after this much more silence (None: on the next evidence)."""
    probability: float | None = None
    """A model's end-of-turn probability, when it has one (for metrics and tuning)."""
    reason: str = ""
    """A short machine-readable reason for logs, e.g. "silence" or "speaking"."""


@runtime_checkable
class TurnDetector(Protocol):
    """Decides whether the caller's turn is over."""

    async def decide(self, evidence: TurnEvidence) -> TurnDecision:
        """End of turn, or wait; must not block the event loop."""
        ...


def reads_transcript(detector: TurnDetector) -> bool:
    """Whether `detector` judges the words (a `reads_transcript = True` attribute): the session
    then asks it once the speculative transcript of the turn so far is known."""
    return bool(getattr(detector, "reads_transcript", False))


def listen_ahead(detector: TurnDetector, audio: bytes) -> Awaitable[object] | None:
    """Let `detector` start on the turn's audio before its words are known (a detector with a
    `listen_ahead(audio)` method, such as one running an acoustic model; it returns what it
    started, or None). Other detectors ignore it."""
    start = getattr(detector, "listen_ahead", None)
    return None if start is None else cast("Awaitable[object] | None", start(audio))


def close_detector(detector: TurnDetector) -> None:
    """The call is over: let `detector` stop what it started for it (a `close()` method, such
    as one cancelling a model run begun by `listen_ahead`). Other detectors ignore it."""
    close = getattr(detector, "close", None)
    if close is not None:
        close()


class SilenceTurnDetector:
    """End of turn after `min_silence_ms` of silence: the VAD's SPEECH_END, nothing more."""

    def __init__(self, *, min_silence_ms: int = 500) -> None:
        if min_silence_ms < 0:
            raise ValueError("min_silence_ms must not be negative")
        self._min_silence_s = min_silence_ms / 1000

    @property
    def min_silence_s(self) -> float:
        """Silence that ends a turn, in seconds."""
        return self._min_silence_s

    async def decide(self, evidence: TurnEvidence) -> TurnDecision:
        """End of turn once the caller is silent long enough; otherwise say how long to wait."""
        if evidence.speaking:
            return TurnDecision(end_of_turn=False, reason="speaking")
        remaining = self._min_silence_s - evidence.trailing_silence_s
        if remaining <= 1e-9:
            return TurnDecision(end_of_turn=True, reason="silence")
        return TurnDecision(end_of_turn=False, recheck_after_s=remaining, reason="silence_short")
