"""Who has the floor: the call's turn-taking rules as a pure, synchronous state machine.

The session feeds `TurnTaking` what happens, each with its moment in monotonic seconds: the
listener's speech events, the turn detector's answers, transcripts and the agent's reply
lifecycle. It returns the actions the session must carry out. It does no I/O and reads no clock,
so every rule is tested in virtual time (`tests/unit/test_turn_taking.py`).

The rules:

- Speech starting while the agent is audible pauses the agent at once (`PauseAgent`); the unplayed
  audio is kept.
- Past `min_interruption_ms` of that speech (from the onset to the last voiced audio; the silence
  after it does not count), the pause becomes an interruption (`InterruptAgent`): the reply is
  stopped and cancelled, recorded as cut at what was heard.
- Speech that ends sooner was a cough or an "mm-hm": the agent carries on where it paused
  (`ResumeAgent`), and the sound is no turn.
- Otherwise the caller's speech is held and the turn detector asked (`DecideTurn`). Its end of turn
  commits the held speech (`CommitTurn`); a wait holds it for more, with a recheck after the
  silence it asked for unless the caller speaks again first (only the latest question counts).
- The committed turn's transcript decides what follows: words are answered (`AnswerTurn`, after
  `InterruptAgent` when a reply is still running); no words after an interruption say what the
  caller did not hear of the cut reply (`SayRest`); no words otherwise are nothing (`IgnoreTurn`);
  a failed transcription is recovered (`RecoverTranscription`).

Later behaviour plugs in here: a speculative reply is one prepared before `CommitTurn` and played
or discarded by the commit or by new speech; a backchannel is a decision at the end of a paused
utterance (resume rather than interrupt).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

from voice_agent.pipeline.turn import TurnDecision, TurnEvidence

R = TypeVar("R")
"""The session's handle of one agent reply; opaque to the machine."""


class Floor(StrEnum):
    """Who has the floor right now."""

    LISTENING = "listening"  # nobody speaks, no reply is running
    CALLER_SPEAKING = "caller_speaking"
    THINKING = "thinking"  # a reply runs, not yet audible
    AGENT_SPEAKING = "agent_speaking"
    PAUSED = "paused"  # the caller speaks over the agent, which is paused: not yet an interruption
    INTERRUPTED = "interrupted"  # the caller interrupted; their turn's transcript decides next


# What the listener hears


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller began speaking (the VAD's onset)."""

    at: float  # when the onset was detected
    onset_at: float  # when the speech itself began
    agent_audible: bool  # whether the agent's sound was playing at that moment


@dataclass(frozen=True, slots=True)
class SpeechContinues:
    """The caller is still speaking: `speech_s` from the onset to their last voiced audio."""

    at: float
    speech_s: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The caller stopped speaking: the utterance's audio (16 kHz PCM) and its moments."""

    at: float
    started_at: float
    ended_at: float  # the last voiced audio
    speech_s: float
    audio: bytes
    evidence: TurnEvidence


Heard: TypeAlias = SpeechStarted | SpeechContinues | SpeechEnded


@dataclass(frozen=True, slots=True)
class CallerTurn:
    """A committed turn of the caller: its audio (16 kHz PCM) and when it was spoken."""

    audio: bytes
    started_at: float
    ended_at: float  # the last voiced audio of the turn
    committed_at: float


# What the session must do


@dataclass(frozen=True, slots=True)
class PauseAgent:
    """Silence the agent now, keeping what it has not said yet."""

    onset_to_stop_ms: float


@dataclass(frozen=True, slots=True)
class ResumeAgent:
    """Carry on speaking where the agent paused; the sound was no turn."""

    speech_ms: int


@dataclass(frozen=True, slots=True)
class InterruptAgent(Generic[R]):
    """Stop the agent's sound and cancel `reply` (None: no reply runs, only stop the sound)."""

    reply: R | None


@dataclass(frozen=True, slots=True)
class DecideTurn:
    """Ask the turn detector; answer with `turn_decided(..., ask=ask)`."""

    evidence: TurnEvidence
    ask: int


@dataclass(frozen=True, slots=True)
class CommitTurn:
    """The caller's turn is over: transcribe it; answer with `transcribed(turn, ...)`."""

    turn: CallerTurn


@dataclass(frozen=True, slots=True)
class AnswerTurn:
    """Record what the caller said and answer it."""

    turn: CallerTurn
    text: str


@dataclass(frozen=True, slots=True)
class SayRest(Generic[R]):
    """The interruption held no words: say the part of `reply` the caller did not hear."""

    reply: R


@dataclass(frozen=True, slots=True)
class IgnoreTurn:
    """The turn held no words (noise): nothing to answer."""

    turn: CallerTurn


@dataclass(frozen=True, slots=True)
class RecoverTranscription:
    """Transcribing the turn failed: say so (the fallback line) and go on."""

    turn: CallerTurn


Action: TypeAlias = (
    PauseAgent
    | ResumeAgent
    | InterruptAgent[R]
    | DecideTurn
    | CommitTurn
    | AnswerTurn
    | SayRest[R]
    | IgnoreTurn
    | RecoverTranscription
)


@dataclass(frozen=True, slots=True)
class _Held:
    """The caller's speech since the last committed turn."""

    audio: bytes
    started_at: float
    ended_at: float


class TurnTaking(Generic[R]):
    """The turn-taking rules of one call (see the module docstring)."""

    def __init__(self, *, min_interruption_ms: int) -> None:
        if min_interruption_ms < 0:
            raise ValueError("min_interruption_ms must not be negative")
        self._min_interruption_s = min_interruption_ms / 1000
        self._caller_speaking = False
        self._paused = False
        self._interrupted: R | None = None  # the reply an interruption cut, until its transcript
        self._reply: R | None = None  # the reply running now
        self._reply_audible = False
        self._held: _Held | None = None
        self._ask = 0  # the latest question to the turn detector
        self._recheck_at: float | None = None

    @property
    def floor(self) -> Floor:
        """Who has the floor."""
        if self._paused:
            return Floor.PAUSED
        if self._interrupted is not None:
            return Floor.INTERRUPTED
        if self._caller_speaking:
            return Floor.CALLER_SPEAKING
        if self._reply is not None:
            return Floor.AGENT_SPEAKING if self._reply_audible else Floor.THINKING
        return Floor.LISTENING

    @property
    def reply(self) -> R | None:
        """The reply running now."""
        return self._reply

    @property
    def holding(self) -> bool:
        """Whether speech of the caller awaits the turn detector's end of turn."""
        return self._held is not None

    @property
    def next_deadline(self) -> float | None:
        """When `tick` has something to do (a recheck of held speech), if ever."""
        return self._recheck_at

    # The listener

    def hear(self, event: Heard) -> list[Action[R]]:
        """Take one listener event."""
        if isinstance(event, SpeechStarted):
            return self._speech_started(event)
        if isinstance(event, SpeechContinues):
            return self._speech_continues(event)
        return self._speech_ended(event)

    def _speech_started(self, event: SpeechStarted) -> list[Action[R]]:
        self._caller_speaking = True
        self._recheck_at = None  # the caller spoke again: their next utterance decides
        if not event.agent_audible or self._paused:
            return []
        self._paused = True
        return [PauseAgent(onset_to_stop_ms=round((event.at - event.onset_at) * 1000, 1))]

    def _speech_continues(self, event: SpeechContinues) -> list[Action[R]]:
        if not self._paused or event.speech_s < self._min_interruption_s:
            return []
        self._paused = False
        self._interrupted = self._reply
        return [InterruptAgent(reply=self._reply)]

    def _speech_ended(self, event: SpeechEnded) -> list[Action[R]]:
        self._caller_speaking = False
        if self._paused:  # too short to be an interruption
            self._paused = False
            return [ResumeAgent(speech_ms=round(event.speech_s * 1000))]
        held = self._held
        self._held = _Held(
            audio=(held.audio if held else b"") + event.audio,
            started_at=held.started_at if held else event.started_at,
            ended_at=event.ended_at,
        )
        self._ask += 1
        return [DecideTurn(evidence=replace(event.evidence, audio=self._held.audio), ask=self._ask)]

    # The turn detector and time

    def turn_decided(self, decision: TurnDecision, *, ask: int, at: float) -> list[Action[R]]:
        """The detector's answer to `DecideTurn(ask=ask)`; an answer to an older one is moot."""
        if ask != self._ask or self._held is None:
            return []
        if decision.end_of_turn:
            return self._commit(at)
        if decision.recheck_after_s is not None and not self._caller_speaking:
            self._recheck_at = at + decision.recheck_after_s
        return []

    def tick(self, *, at: float) -> list[Action[R]]:
        """Time has passed: commit held speech whose recheck is due."""
        if self._recheck_at is None or at < self._recheck_at:
            return []
        return self._commit(at)

    def _commit(self, at: float) -> list[Action[R]]:
        held, self._held, self._recheck_at = self._held, None, None
        if held is None:
            return []
        turn = CallerTurn(
            audio=held.audio, started_at=held.started_at, ended_at=held.ended_at, committed_at=at
        )
        return [CommitTurn(turn=turn)]

    # Transcripts

    def transcribed(self, turn: CallerTurn, text: str | None, *, at: float) -> list[Action[R]]:
        """The committed turn's transcript (None: transcription failed)."""
        interrupted, self._interrupted = self._interrupted, None
        if text is None:
            return [RecoverTranscription(turn=turn)]
        if not text.strip():
            return [SayRest(reply=interrupted)] if interrupted is not None else [IgnoreTurn(turn)]
        actions: list[Action[R]] = []
        if self._reply is not None:  # the caller spoke while the agent was still at it
            actions.append(InterruptAgent(reply=self._reply))
        actions.append(AnswerTurn(turn=turn, text=text))
        return actions

    # The agent's replies

    def reply_started(self, reply: R, *, at: float) -> None:
        """A reply began (thinking, or about to speak fixed text)."""
        self._reply, self._reply_audible = reply, False

    def reply_audible(self, reply: R, *, at: float) -> None:
        """The reply's first sound reached the room."""
        if reply is self._reply:
            self._reply_audible = True

    def reply_finished(self, reply: R, *, at: float) -> None:
        """The reply is over (spoken, cut or failed)."""
        if reply is self._reply:
            self._reply, self._reply_audible = None, False
