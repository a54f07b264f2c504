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
  While voice is heard that the VAD has not yet confirmed as speech (`OnsetPending`), nothing
  commits: the caller may be resuming, and the commit waits until that voice fades.
- The committed turn's transcript decides what follows: words are answered (`AnswerTurn`, after
  `InterruptAgent` when a reply is still running); no words after an interruption say what the
  caller did not hear of the cut reply (`SayRest`); no words otherwise are nothing (`IgnoreTurn`);
  a failed transcription is recovered (`RecoverTranscription`).

Speculation (when `Speculation.max_per_turn` allows it): the listener's VAD ends an utterance at a
short pause, long before the turn detector may commit it. At that pause the machine asks for the
turn so far to be transcribed and its reply prepared but not played (`Speculate`). The commit of
exactly that audio carries the speculation (`CommitTurn.speculation`): its transcript is reused
and its prepared reply played. New speech first discards it (`DiscardSpeculation`, counted as
wasted). A speculation starts only while no reply runs and until `max_wasted_per_call` have been
wasted. At most `max_per_turn` of a turn's speculations prepare a reply (an LLM request); past
that, a halting turn's pauses are still transcribed (`Speculate.prepare` false), so the turn
detector keeps judging the words rather than falling back to silence alone.

Backchannels (when `backchannel_max_ms` is set): paused speech past `min_interruption_ms` is not
yet an interruption. Speech lasting `backchannel_max_ms` is; shorter speech is transcribed when it
ends (`JudgeBackchannel`), and its words decide, in this order:

1. An interrupting word (`INTERRUPTING`: "stop", "wait", "no", "sorry", "hold on", "actually",
   "excuse me", a question word, ...) or a question that is no acknowledgement interrupts the
   agent, however short the speech: "stop" lasts less than `min_interruption_ms`, so a short
   sound is judged too (it resumes only once its words are known, and not before
   `resume_after_ms` of silence).
2. Otherwise a short sound (under `min_interruption_ms`: a cough, a breath) resumes the agent.
3. An acknowledgement (`is_backchannel`: "mm-hm", "yeah yeah", "oh okay", "okay, got it", up to
   four once spellings are normalised and repeats folded) resumes it, and so does speech with no
   words or whose transcription failed.
4. Words that are neither, short and few (`sounds_like_hum`: under 900 ms, at most three
   words), are Whisper mishearing a hum ("mm-hm" → "and the macen"): the agent goes on.
5. Any other words interrupt it and become the caller's turn (their transcript reused at the
   commit).

The agent stays paused, silent, while this is decided, so a real interruption is still heard at
once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Generic, TypeAlias, TypeVar

from voice_agent.agent.backchannel import interrupts, is_backchannel, sounds_like_hum
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


@dataclass(frozen=True, slots=True)
class OnsetPending:
    """Voice is heard that may become speech (`pending`), or it faded without becoming speech.

    The VAD confirms an onset only after `PAUSE_ONSET_MS` of voice, so a caller resuming after a
    pause is heard as speaking that much late; until then no deadline commits the held turn."""

    at: float
    pending: bool


Heard: TypeAlias = SpeechStarted | SpeechContinues | SpeechEnded | OnsetPending


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
    """The caller's turn is over: transcribe it; answer with `transcribed(turn, ...)`.

    `speculation`: the key of the speculation made on exactly this audio (reuse its transcript
    and prepared reply). `transcript`: the turn's words are already known (no transcription)."""

    turn: CallerTurn
    speculation: int | None = None
    transcript: str | None = None


@dataclass(frozen=True, slots=True)
class Speculate:
    """Transcribe the turn so far and prepare its reply without playing it; `key` names it.

    `prepare` false: transcribe only (the turn's replies prepared so far reached the cap)."""

    turn: CallerTurn
    key: int
    transcript: str | None = None  # the words, when already known (no transcription needed)
    prepare: bool = True


@dataclass(frozen=True, slots=True)
class DiscardSpeculation:
    """The caller went on (or the turn went another way): cancel and forget speculation `key`."""

    key: int
    wasted: bool = True


@dataclass(frozen=True, slots=True)
class JudgeBackchannel:
    """Transcribe speech said over the paused agent; answer with `backchannel_heard`."""

    audio: bytes
    ask: int


@dataclass(frozen=True, slots=True)
class AnswerTurn:
    """Record what the caller said and answer it (with speculation `speculation`'s reply)."""

    turn: CallerTurn
    text: str
    speculation: int | None = None


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
    | Speculate
    | DiscardSpeculation
    | JudgeBackchannel
    | AnswerTurn
    | SayRest[R]
    | IgnoreTurn
    | RecoverTranscription
)


@dataclass(frozen=True, slots=True)
class Speculation:
    """How far speculation may go (`max_per_turn=0`: never speculate)."""

    max_per_turn: int = 0
    """Speculations per turn that prepare a reply; 0: none at all (no speculative STT either)."""
    max_wasted_per_call: int = 0


@dataclass(frozen=True, slots=True)
class _Held:
    """The caller's speech since the last committed turn."""

    audio: bytes
    started_at: float
    ended_at: float
    transcript: str | None = None  # known already (a judged backchannel that was none)


class TurnTaking(Generic[R]):
    """The turn-taking rules of one call (see the module docstring)."""

    def __init__(
        self,
        *,
        min_interruption_ms: int,
        resume_after_ms: int = 0,
        backchannel_max_ms: int | None = None,
        speculation: Speculation | None = None,
    ) -> None:
        if min(min_interruption_ms, resume_after_ms, backchannel_max_ms or 0) < 0:
            raise ValueError("durations must not be negative")
        self._min_interruption_s = min_interruption_ms / 1000
        self._resume_after_s = resume_after_ms / 1000
        self._backchannel_max_s = (
            None
            if backchannel_max_ms is None
            else max(backchannel_max_ms, min_interruption_ms) / 1000
        )
        self._speculation = speculation or Speculation()
        self._speculating: int | None = None  # the key (an ask) of the live speculation
        self._speculated = 0  # speculations made in this turn
        self.speculations = 0
        """Speculations made in this call."""
        self.wasted = 0
        """Speculations discarded because the caller went on (wasted requests)."""
        self._paused_s = 0.0  # speech over the paused agent in earlier utterances
        self._paused_audio = b""
        self._paused_started_at = 0.0
        self._resume_at: float | None = None
        self._judging = 0  # the latest JudgeBackchannel
        self._awaiting = False  # a short sound's words are being judged: no resume before
        self._caller_speaking = False
        self._onset_pending = False  # voice heard, not yet confirmed as speech
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
        recheck = None if self._onset_pending else self._recheck_at  # the onset decides first
        resume_at = None if self._awaiting else self._resume_at
        deadlines = [d for d in (recheck, resume_at) if d is not None]
        return min(deadlines) if deadlines else None

    # The listener

    def hear(self, event: Heard) -> list[Action[R]]:
        """Take one listener event."""
        if isinstance(event, SpeechStarted):
            return self._speech_started(event)
        if isinstance(event, SpeechContinues):
            return self._speech_continues(event)
        if isinstance(event, OnsetPending):
            return self._onset(event)
        return self._speech_ended(event)

    def _onset(self, event: OnsetPending) -> list[Action[R]]:
        self._onset_pending = event.pending
        if event.pending or self._caller_speaking:
            return []
        return self.tick(at=event.at)  # it faded without becoming speech: a held commit is due

    def _speech_started(self, event: SpeechStarted) -> list[Action[R]]:
        self._caller_speaking = True
        self._onset_pending = False
        self._recheck_at = None  # the caller spoke again: their next utterance decides
        actions = self._discard(wasted=True)
        if self._paused:  # more speech over the paused agent: it adds up
            self._resume_at, self._awaiting = None, False
            self._judging += 1  # a judgement still running is moot
            return actions
        if not event.agent_audible:
            return actions
        self._paused = True
        self._paused_s, self._paused_audio = 0.0, b""
        self._paused_started_at = event.onset_at
        return [
            *actions,
            PauseAgent(onset_to_stop_ms=round((event.at - event.onset_at) * 1000, 1)),
        ]

    def _speech_continues(self, event: SpeechContinues) -> list[Action[R]]:
        if not self._paused:
            return []
        spoken = self._paused_s + event.speech_s
        limit = self._backchannel_max_s or self._min_interruption_s
        if spoken < limit:
            return []
        return self._interrupt()

    def _interrupt(self) -> list[Action[R]]:
        self._paused, self._resume_at, self._awaiting = False, None, False
        self._interrupted = self._reply
        return [InterruptAgent(reply=self._reply)]

    def _speech_ended(self, event: SpeechEnded) -> list[Action[R]]:
        self._caller_speaking = False
        if self._paused:
            self._paused_s += event.speech_s
            self._paused_audio += event.audio
            short = self._paused_s < self._min_interruption_s
            if short:  # a cough: resume after the silence
                self._resume_at = event.at + self._resume_after_s
            if self._backchannel_max_s is None:
                return self._resume_if_due(event.at)
            # As long as a backchannel: is it one? A short sound too: "stop" is short.
            self._judging += 1
            self._awaiting = True
            return [JudgeBackchannel(audio=self._paused_audio, ask=self._judging)]
        return self._hold(event.audio, event.started_at, event.ended_at, event.evidence)

    def _hold(
        self,
        audio: bytes,
        started_at: float,
        ended_at: float,
        evidence: TurnEvidence,
        transcript: str | None = None,
    ) -> list[Action[R]]:
        held = self._held
        self._held = _Held(
            audio=(held.audio if held else b"") + audio,
            started_at=held.started_at if held else started_at,
            ended_at=ended_at,
            transcript=transcript if held is None else None,
        )
        self._ask += 1
        actions: list[Action[R]] = [
            DecideTurn(evidence=replace(evidence, audio=self._held.audio), ask=self._ask)
        ]
        limits = self._speculation
        if (
            self._reply is None
            and limits.max_per_turn > 0
            and self.wasted < limits.max_wasted_per_call
        ):
            prepare = self._speculated < limits.max_per_turn
            self._speculating = self._ask
            self._speculated += prepare
            self.speculations += 1
            turn = CallerTurn(
                audio=self._held.audio,
                started_at=self._held.started_at,
                ended_at=self._held.ended_at,
                committed_at=ended_at,
            )
            actions.append(
                Speculate(
                    turn=turn, key=self._ask, transcript=self._held.transcript, prepare=prepare
                )
            )
        return actions

    def _discard(self, *, wasted: bool) -> list[Action[R]]:
        key, self._speculating = self._speculating, None
        if key is None:
            return []
        if wasted:
            self.wasted += 1
        return [DiscardSpeculation(key=key, wasted=wasted)]

    def _resume_if_due(self, at: float) -> list[Action[R]]:
        if self._resume_at is None or at < self._resume_at or self._awaiting:
            return []
        self._paused, self._resume_at = False, None
        return [ResumeAgent(speech_ms=round(self._paused_s * 1000))]

    def backchannel_heard(self, text: str | None, *, ask: int, at: float) -> list[Action[R]]:
        """The transcript of speech over the paused agent (None: transcription failed)."""
        if ask != self._judging or not self._paused or self._caller_speaking:
            return []  # moot: the caller spoke again, or the pause already ended
        self._awaiting = False
        words = (text or "").strip()
        if not interrupts(words):
            if self._resume_at is not None:  # a short sound: after its silence
                return self._resume_if_due(at)
            speech_ms = self._paused_s * 1000
            if not words or is_backchannel(words) or sounds_like_hum(words, speech_ms):
                # An acknowledgement, a hum, a sound without words, or unknown: go on.
                self._paused = False
                return [ResumeAgent(speech_ms=round(speech_ms))]
        actions = self._interrupt()
        evidence = TurnEvidence(transcript=words, audio=self._paused_audio)
        return actions + self._hold(
            self._paused_audio, self._paused_started_at, at, evidence, transcript=words
        )

    # The turn detector and time

    def turn_decided(self, decision: TurnDecision, *, ask: int, at: float) -> list[Action[R]]:
        """The detector's answer to `DecideTurn(ask=ask)`; an answer to an older one is moot,
        and so is one that comes while the caller speaks again (a detector that waited for the
        speculative transcript may answer late): their next utterance decides."""
        if ask != self._ask or self._held is None or self._caller_speaking:
            return []
        if decision.end_of_turn:
            if self._onset_pending:  # the caller may be resuming: due once the voice fades
                self._recheck_at = at
                return []
            return self._commit(at)
        if decision.recheck_after_s is not None and not self._caller_speaking:
            self._recheck_at = at + decision.recheck_after_s
        return []

    def tick(self, *, at: float) -> list[Action[R]]:
        """Time has passed: resume a pause or commit held speech whose deadline is due."""
        actions = self._resume_if_due(at)
        if self._recheck_at is None or at < self._recheck_at or self._onset_pending:
            return actions
        return actions + self._commit(at)

    def _commit(self, at: float) -> list[Action[R]]:
        held, self._held, self._recheck_at = self._held, None, None
        if held is None:
            return []
        turn = CallerTurn(
            audio=held.audio, started_at=held.started_at, ended_at=held.ended_at, committed_at=at
        )
        # Held speech only grows by utterances, and each new one discards the speculation: a
        # live speculation was made on exactly this audio.
        key, self._speculating, self._speculated = self._speculating, None, 0
        return [CommitTurn(turn=turn, speculation=key, transcript=held.transcript)]

    # Transcripts

    def transcribed(
        self, turn: CallerTurn, text: str | None, *, at: float, speculation: int | None = None
    ) -> list[Action[R]]:
        """The committed turn's transcript (None: transcription failed); `speculation`: the
        speculation the commit carried, whose prepared reply may answer it."""
        interrupted, self._interrupted = self._interrupted, None
        unused: list[Action[R]] = (
            [] if speculation is None else [DiscardSpeculation(key=speculation, wasted=False)]
        )
        if text is None:
            return [*unused, RecoverTranscription(turn=turn)]
        if not text.strip():
            if interrupted is not None:
                return [*unused, SayRest(reply=interrupted)]
            return [*unused, IgnoreTurn(turn)]
        actions: list[Action[R]] = []
        if self._reply is not None:  # the caller spoke while the agent was still at it
            # A reply started after the speculation: its prepared answer may be stale.
            if speculation is not None:
                self.wasted += 1
                actions.append(DiscardSpeculation(key=speculation))
            actions.append(InterruptAgent(reply=self._reply))
            speculation = None
        actions.append(AnswerTurn(turn=turn, text=text, speculation=speculation))
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
