"""The caller's side of a call: hearing them, deciding whose turn it is, answering their words.

`Conversation` listens to the caller's microphone (through a `Listener`), hands what it hears to
the `TurnTaking` machine and carries out its actions: it pauses, resumes and interrupts the
agent's voice, asks the turn detector, transcribes each committed turn (with interim captions)
and has the agent answer it, or say the rest of a reply the caller cut short.

Speculation: at the caller's pause the turn so far is transcribed (interim captions only) and,
with words, answered by a reply prepared unplayed (`AgentVoice.prepare`). A detector that reads the
transcript is asked once it is known. The commit of that audio reuses the transcript (no second
STT request) and plays the prepared reply, if the conversation it was prepared on is still the
one it would be sent now; otherwise it is discarded and the answer starts afresh.

Committed words that end in a long loop (the STT's decoder repeating a phrase it could not make
out, `unlooped`) are answered, captioned and recorded with the phrase said once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from voice_agent import tracing
from voice_agent.agent import metrics
from voice_agent.agent.captions import CaptionPublisher, new_segment_id
from voice_agent.agent.listener import FRAME_MS, SAMPLE_RATE, Listener
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.options import SessionOptions
from voice_agent.agent.pre_connect import PreConnectBuffers
from voice_agent.agent.reply import AgentReply
from voice_agent.agent.room import CallerAudio
from voice_agent.agent.turn_taking import (
    Action,
    AnswerTurn,
    CallerTurn,
    CommitTurn,
    DecideTurn,
    DiscardSpeculation,
    Heard,
    IgnoreTurn,
    InterruptAgent,
    JudgeBackchannel,
    PauseAgent,
    RecoverTranscription,
    ResumeAgent,
    SayRest,
    Speculate,
    SpeechEnded,
    SpeechStarted,
    TurnTaking,
)
from voice_agent.agent.voice import AgentVoice, CallMemory, PreparedReply, VoiceHost
from voice_agent.call_record import TranscriptTurn
from voice_agent.chat import ChatMessage
from voice_agent.exceptions import ProviderError
from voice_agent.logging import Logger
from voice_agent.pipeline.completeness import unlooped
from voice_agent.pipeline.turn import (
    TurnDetector,
    TurnEvidence,
    close_detector,
    listen_ahead,
    reads_transcript,
)
from voice_agent.pipeline.vad_model import SileroModelPool
from voice_agent.protocol import AgentState, TurnKind
from voice_agent.providers.base import STT, PcmAudio, Transcript

_ROUTINE_HOLDS = frozenset({"speaking", "complete_short", "silence_short"})
"""Decisions to wait that every turn makes (the commit silence, the silence rule's own wait):
not recorded; the others (unfinished words, a level voice, words the STT doubted, ...) are."""
_AUDIO_LAG_MAX_S = 0.5
"""How long a due recheck waits for audio the clock says has arrived (a loaded loop's lag)."""


@dataclass(eq=False)
class _Speculation:
    """A speculation in flight: the transcript of the turn so far, then its prepared reply."""

    key: int
    timer: TurnTimer
    transcript: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    confidence: float | None = None  # the STT's, of the transcript (when it says)
    prepared: PreparedReply | None = None
    task: asyncio.Task[None] | None = None


class Conversation:
    """Turn taking for one call, carried out (see the module docstring)."""

    def __init__(
        self,
        *,
        host: VoiceHost,
        voice: AgentVoice,
        turns: TurnTaking[AgentReply],
        turn_detector: TurnDetector,
        stt: STT,
        memory: CallMemory,
        captions: CaptionPublisher,
        options: SessionOptions,
        log: Logger,
    ) -> None:
        self._host = host
        self._voice = voice
        self._turns = turns
        self._detector = turn_detector
        self._stt = stt
        self._memory = memory
        self._captions = captions
        self._opts = options
        self._log = log
        self._caller: str | None = None
        self._track_sid: str | None = None
        self._typing = asyncio.Lock()  # typed messages are answered one after the other
        self._turn_tasks: set[asyncio.Task[Any]] = set()  # committed turns not yet answered
        self._recheck: asyncio.TimerHandle | None = None
        # Audio time, not only the clock, decides a recheck: a loaded loop may hold frames
        # (the caller resuming) that arrived before the timer fired.
        self._ended_at: float | None = None  # when the latest utterance ended (SpeechEnded.at)
        self._heard_since_end = 0.0  # seconds of audio heard since then
        self._audio_wait: float | None = None  # a due recheck waits until this much is heard
        self._speculations: dict[int, _Speculation] = {}
        self._segment: str | None = None  # the caption segment of the turn being spoken
        self.answered = 0
        """Caller turns answered so far (the number of the next agent turn is this + 1)."""
        self.last_heard = time.monotonic()
        """When the caller's speech last started or ended."""

    async def listen(
        self,
        audio: CallerAudio,
        *,
        caller: str,
        models: SileroModelPool,
        on_listening: Callable[[], None],
        pre_connect: PreConnectBuffers | None = None,
    ) -> None:
        """Hear `caller` on `audio` until the track ends or the call is over; `on_listening`
        once the VAD is ready for the first frame. The track's pre-connect buffer (what the
        caller said before the agent joined), if one is arriving, is heard first."""
        self._caller, self._track_sid = caller, audio.sid
        model = await models.acquire()
        listener = Listener(
            model=model,
            pause_ms=self._opts.speech_pause_ms,
            agent_audible=lambda: self._voice.speaker.speaking,
        )
        try:
            frames = audio.frames(sample_rate=SAMPLE_RATE, frame_ms=FRAME_MS)
            async with contextlib.aclosing(frames):
                announced = audio.pre_connect_buffer
                if pre_connect is not None and (announced or pre_connect.pending(audio.sid)):
                    # The live track starts where the buffer ends: open it (its frames queue)
                    # before waiting for the buffer.
                    first = await anext(frames, None)
                    buffered = await pre_connect.take(
                        audio.sid, announced=announced, live_since=time.monotonic()
                    )
                    if buffered is not None:
                        self._hear_buffered(listener, buffered.pcm)
                    on_listening()
                    if first is not None:
                        self._hear(listener.push(first, at=time.monotonic()))
                else:
                    on_listening()
                async for pcm in frames:
                    self._hear(listener.push(pcm, at=time.monotonic()))
        finally:
            models.release(model)

    @property
    def answering(self) -> bool:
        """Whether a caller's turn (spoken or typed) is being transcribed or answered."""
        return bool(self._turn_tasks) or self._typing.locked()

    def _hear_buffered(self, listener: Listener, pcm: bytes) -> None:
        """Hear audio recorded before now, each frame at the moment it was recorded."""
        frame = SAMPLE_RATE * FRAME_MS // 1000 * 2
        seconds = len(pcm) / 2 / SAMPLE_RATE
        self._memory.journal.add_event("pre_connect_audio", seconds=round(seconds, 2))
        started = time.monotonic() - seconds
        for offset in range(0, len(pcm), frame):
            chunk = pcm[offset : offset + frame]
            at = started + (offset + len(chunk)) / 2 / SAMPLE_RATE
            self._hear(listener.push(chunk, at=at))

    def close(self) -> None:
        """Stop a pending recheck, every speculation and what the detector started (the call is
        ending)."""
        self._stop_recheck()
        for key in [*self._speculations]:
            self._discard(key, wasted=False)
        close_detector(self._detector)

    def _stop_recheck(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    def _hear(self, heard: Sequence[Heard]) -> None:
        """Hand the listener's events (of one frame) to the turn-taking machine; do what it
        says, and a recheck that waited for this frame's audio."""
        self._heard_since_end += FRAME_MS / 1000
        for event in heard:
            if isinstance(event, SpeechEnded):
                self._ended_at, self._heard_since_end = event.at, 0.0
            if isinstance(event, SpeechStarted | SpeechEnded):  # the caller is there
                self.last_heard = time.monotonic()
            if isinstance(event, SpeechStarted):
                self._log.debug("vad.speech_start", agent_audible=event.agent_audible)
            self._act(self._turns.hear(event))
        if self._audio_wait is not None and self._heard_since_end >= self._audio_wait:
            self._audio_wait = None
            self._on_recheck()

    def _act(self, actions: Sequence[Action[AgentReply]]) -> None:
        """Carry out what the machine said while hearing (nothing here waits)."""
        journal = self._memory.journal
        for action in actions:
            if isinstance(action, PauseAgent):
                self._voice.speaker.pause()
                self._log.info("call.barge_in_paused", onset_to_stop_ms=action.onset_to_stop_ms)
                journal.add_event("barge_in", onset_to_stop_ms=action.onset_to_stop_ms)
                self._host.set_state(AgentState.LISTENING)
            elif isinstance(action, ResumeAgent):
                metrics.FALSE_INTERRUPTIONS.inc()
                self._log.info("call.barge_in_resumed", speech_ms=action.speech_ms)
                journal.add_event("barge_in_resumed", speech_ms=action.speech_ms)
                self._voice.speaker.resume()
                self._host.set_state(AgentState.SPEAKING)
            elif isinstance(action, InterruptAgent):
                self._voice.interrupt()
            elif isinstance(action, DecideTurn):
                self._host.spawn(self._decide(action.evidence, action.ask))
            elif isinstance(action, CommitTurn):
                task = self._host.spawn(self._traced_turn(action))
                self._turn_tasks.add(task)
                task.add_done_callback(self._turn_tasks.discard)
            elif isinstance(action, Speculate):
                self._speculate(action)
            elif isinstance(action, DiscardSpeculation):
                self._discard(action.key, wasted=action.wasted)
            elif isinstance(action, JudgeBackchannel):
                self._host.spawn(self._judge(action))
        self._schedule_recheck()

    async def _decide(self, evidence: TurnEvidence, ask: int) -> None:
        """Ask the turn detector about the held speech; the machine decides what it means."""
        speculation = self._speculations.get(ask)
        if speculation is not None and reads_transcript(self._detector):
            listen_ahead(self._detector, evidence.audio)  # while the words are transcribed
            # Wait for the words as long as an unfinished utterance may pause; the silence
            # since the question counts toward the detector's waits.
            asked_at = time.monotonic()
            limit_s = max(self._opts.eou_incomplete_ms - self._opts.speech_pause_ms, 0) / 1000
            await asyncio.wait({speculation.transcript}, timeout=limit_s)
            words = speculation.transcript
            known = words.done() and not words.cancelled() and words.result()
            evidence = replace(
                evidence,
                transcript=(words.result() or "") if known else "",
                transcript_confidence=speculation.confidence if known else None,
                trailing_silence_s=evidence.trailing_silence_s + time.monotonic() - asked_at,
            )
        decision = await self._detector.decide(evidence)
        if not decision.end_of_turn and decision.recheck_after_s is None:
            self._log.debug("turn.held", reason=decision.reason)
        if not decision.end_of_turn and decision.reason not in _ROUTINE_HOLDS:
            # Why the agent waited at this pause, in the call's record: what an operator needs
            # when a caller says it was slow to answer (or one says it cut them off).
            confidence = evidence.transcript_confidence
            self._memory.journal.add_event(
                "turn_held",
                reason=decision.reason,
                words=len(evidence.transcript.split()),
                confidence=None if confidence is None else round(confidence, 2),
                wait_ms=None
                if decision.recheck_after_s is None
                else round(decision.recheck_after_s * 1000),
            )
        self._act(self._turns.turn_decided(decision, ask=ask, at=time.monotonic()))

    def _schedule_recheck(self) -> None:
        self._stop_recheck()
        deadline = self._turns.next_deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._recheck = asyncio.get_running_loop().call_later(delay, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck = None
        now, deadline = time.monotonic(), self._turns.next_deadline
        if deadline is not None and self._ended_at is not None:
            needed = deadline - self._ended_at
            if self._heard_since_end + 1e-3 < needed and now - deadline < _AUDIO_LAG_MAX_S:
                # The clock says due, the audio is not heard yet: wait for it (bounded, in
                # case the track stopped sending).
                self._audio_wait = needed
                loop = asyncio.get_running_loop()
                self._recheck = loop.call_later(_AUDIO_LAG_MAX_S, self._on_recheck)
                return
        self._audio_wait = None
        self._act(self._turns.tick(at=now))

    # Speculation and backchannels

    def _speculate(self, action: Speculate) -> None:
        timer = TurnTimer(turn=self.answered + 1)
        timer.speech_ended = action.turn.ended_at
        speculation = _Speculation(key=action.key, timer=timer)
        self._speculations[action.key] = speculation
        self._memory.usage.speculations += 1
        speculation.task = self._host.spawn(self._run_speculation(speculation, action))

    async def _run_speculation(self, speculation: _Speculation, action: Speculate) -> None:
        """`_speculate_turn` in a span of its own: the turn is not committed yet, so its STT and
        the prepared reply's stages (LLM, held tools, TTS) are the speculation's children."""
        with tracing.span("speculation", start=action.turn.ended_at, key=action.key):
            await self._speculate_turn(speculation, action)

    async def _speculate_turn(self, speculation: _Speculation, action: Speculate) -> None:
        """Transcribe the turn so far (unless known) and prepare the reply to its words."""
        timer = speculation.timer
        text = action.transcript
        if text is None:
            timer.stt_started = time.monotonic()
            # Interim captions of the turn so far; only the commit publishes the final version.
            self._segment = self._segment or new_segment_id()
            audio = PcmAudio(action.turn.audio, SAMPLE_RATE)
            with tracing.span("stt", audio_s=round(audio.duration_s, 3)):
                heard = await self._transcription(audio, self._segment)
            timer.stt_done = time.monotonic()
            text = None if heard is None else heard.text
            speculation.confidence = None if heard is None else heard.confidence
        speculation.transcript.set_result(text)
        if action.prepare and text and not self._voice.busy and not self._host.ending:
            speculation.prepared = self._voice.prepare(user_text=text, timer=timer)

    def _discard(self, key: int, *, wasted: bool) -> None:
        speculation = self._speculations.pop(key, None)
        if speculation is None:
            return
        if speculation.task is not None:
            speculation.task.cancel()
        speculation.transcript.cancel()
        if speculation.prepared is not None:
            self._voice.discard(speculation.prepared)
        outcome = "wasted" if wasted else "unused"
        metrics.SPECULATIONS.labels(outcome=outcome).inc()
        if wasted:
            self._memory.usage.speculations_wasted += 1
            self._memory.journal.add_event(
                "speculation_wasted", prepared=speculation.prepared is not None
            )
            self._log.debug("turn.speculation_wasted", prepared=speculation.prepared is not None)

    async def _judge(self, action: JudgeBackchannel) -> None:
        """Transcribe speech over the paused agent: a backchannel, or an interruption?"""
        text = await self._transcribe(PcmAudio(action.audio, SAMPLE_RATE), None)
        self._log.info("call.backchannel_judged", text_chars=len(text or ""), failed=text is None)
        self._act(self._turns.backchannel_heard(text, ask=action.ask, at=time.monotonic()))

    # A committed turn

    async def _traced_turn(self, commit: CommitTurn) -> None:
        """`_take_turn` in the turn's span, from the end of the caller's speech until the reply
        starts; the reply's stages (LLM, tools, TTS) are its children."""
        turn = commit.turn
        with tracing.span("turn", start=turn.ended_at, turn=self.answered + 1):
            tracing.record("end_of_turn", start=turn.ended_at, end=turn.committed_at)
            await self._take_turn(commit)

    async def _take_turn(self, commit: CommitTurn) -> None:
        """Transcribe a committed turn (or reuse its words); the machine says what follows."""
        turn = commit.turn
        speculation = (
            self._speculations.get(commit.speculation) if commit.speculation is not None else None
        )
        timer = speculation.timer if speculation is not None else TurnTimer(turn=0)
        timer.turn = self.answered + 1
        timer.speech_ended = turn.ended_at
        timer.turn_committed = turn.committed_at
        segment, self._segment = self._segment or new_segment_id(), None
        audio = PcmAudio(turn.audio, SAMPLE_RATE)
        text: str | None
        if commit.transcript is not None:
            text = commit.transcript
        elif speculation is not None:  # the same audio: its words, without a second request
            text = await speculation.transcript
        else:
            timer.stt_started = time.monotonic()
            with tracing.span("stt", audio_s=round(audio.duration_s, 3)):
                text = await self._transcribe(audio, segment)
            timer.stt_done = time.monotonic()
        if text:
            text, dropped = unlooped(text)
            if dropped:  # the STT's decoder looped: the words once, not forty times over
                self._log.info("stt.loop_dropped", words=dropped)
                self._memory.journal.add_event("loop_dropped", words=dropped)
        actions = self._turns.transcribed(
            turn, text, at=time.monotonic(), speculation=commit.speculation
        )
        if not any(isinstance(action, AnswerTurn) for action in actions):
            # Interims may have been shown, but no words are committed (none heard, or STT
            # failed): the segment still ends, with a final empty version.
            await self._captions.end(segment)
        for action in actions:
            if isinstance(action, DiscardSpeculation):
                self._discard(action.key, wasted=action.wasted)
            elif isinstance(action, InterruptAgent):
                self._voice.interrupt()
            elif isinstance(action, AnswerTurn):
                used = (
                    self._speculations.pop(action.speculation, None) if action.speculation else None
                )
                await self._answer(action.turn, action.text, segment, timer, used)
            elif isinstance(action, SayRest):
                await self._voice.say_rest(action.reply, turn=self.answered)
            elif isinstance(action, IgnoreTurn):
                self._log.info("call.no_words", seconds=round(audio.duration_s, 2))
            elif isinstance(action, RecoverTranscription):
                await self._voice.fail_turn("stt", timer)

    async def _answer(
        self,
        turn: CallerTurn,
        text: str,
        segment: str,
        timer: TurnTimer,
        speculation: _Speculation | None = None,
    ) -> None:
        self.answered += 1
        now = time.time()
        self._memory.journal.add_turn(
            TranscriptTurn(
                speaker="user",
                text=text,
                started_at=now - (time.monotonic() - turn.started_at),
                ended_at=now,
            )
        )
        self._log.info("turn.user", text_chars=len(text))
        self._caption(text, segment, final=True)
        await self._voice.settle()  # an interrupted reply commits what was heard of it first
        self._memory.context.add_user(text)
        prepared = speculation.prepared if speculation is not None else None
        if prepared is not None and self._fits(prepared, self._memory.context.messages()):
            metrics.SPECULATIONS.labels(outcome="used").inc()
            self._voice.adopt(prepared, user_text=text)
            return
        if prepared is not None:  # prepared on another conversation: its answer may be stale
            metrics.SPECULATIONS.labels(outcome="unused").inc()
            self._voice.discard(prepared)
        await self._voice.start(user_text=text, kind=TurnKind.REPLY, timer=timer)

    async def answer_typed(self, text: str) -> None:
        """The caller typed `text` (already checked): once the agent's current reply has
        ended, it is answered, spoken and captioned, like words they said."""
        async with self._typing:
            self.last_heard = time.monotonic()
            timer = TurnTimer(turn=self.answered + 1)
            await self._voice.settle()
            self.answered += 1
            now = time.time()
            self._memory.journal.add_turn(
                TranscriptTurn(speaker="user", text=text, started_at=now, ended_at=now, typed=True)
            )
            self._log.info("turn.user", text_chars=len(text), typed=True)
            self._memory.context.add_user(text)
            await self._voice.start(user_text=text, kind=TurnKind.REPLY, timer=timer)

    @staticmethod
    def _fits(prepared: PreparedReply, messages: list[ChatMessage]) -> bool:
        """Whether the prepared reply was asked exactly what would be asked now."""
        return prepared.messages == messages

    async def _transcribe(self, audio: PcmAudio, segment: str | None) -> str | None:
        """The segment's text (see `_transcription`)."""
        heard = await self._transcription(audio, segment)
        return None if heard is None else heard.text

    async def _transcription(self, audio: PcmAudio, segment: str | None) -> Transcript | None:
        """The segment's transcript, its text stripped, captioned as it comes (not without a
        `segment`: judged speech); None when STT failed (after its retry)."""
        self._memory.usage.stt_audio_s += audio.duration_s
        try:
            stream = self._stt.transcribe_stream(audio, language=self._opts.stt_language)
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.transcript is not None:
                        return replace(event.transcript, text=event.transcript.text.strip())
                    if segment is not None:
                        self._caption(event.text, segment, final=False)
            return Transcript(text="", language=None, duration_s=audio.duration_s)
        except ProviderError as e:
            self._log.warning("stt.failed", error=str(e), retryable=e.retryable)
            return None

    def _caption(self, text: str, segment: str, *, final: bool) -> None:
        """Caption the caller's words on their behalf, naming their microphone track."""
        if self._caller is None or not text:
            return
        self._captions.post(
            text=text,
            segment_id=segment,
            final=final,
            track_sid=self._track_sid,
            sender_identity=self._caller,
        )
