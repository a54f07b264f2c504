"""The caller's side of a call: hearing them, deciding whose turn it is, answering their words.

`Conversation` listens to the caller's microphone (through a `Listener`), hands what it hears to
the `TurnTaking` machine and carries out its actions: it pauses, resumes and interrupts the
agent's voice, asks the turn detector, transcribes each committed turn (with interim captions)
and has the agent answer it, or say the rest of a reply the caller cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
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
    Heard,
    IgnoreTurn,
    InterruptAgent,
    PauseAgent,
    RecoverTranscription,
    ResumeAgent,
    SayRest,
    SpeechContinues,
    SpeechStarted,
    TurnTaking,
)
from voice_agent.agent.voice import AgentVoice, CallMemory, VoiceHost
from voice_agent.call_record import TranscriptTurn
from voice_agent.exceptions import ProviderError
from voice_agent.logging import Logger
from voice_agent.pipeline.turn import TurnDetector, TurnEvidence
from voice_agent.pipeline.vad_model import SileroModelPool
from voice_agent.protocol import AgentState, TurnKind
from voice_agent.providers.base import STT, PcmAudio


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
            eou_silence_ms=self._opts.eou_silence_ms,
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
                    buffered = await pre_connect.take(audio.sid, announced=announced)
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
        """Stop a pending recheck of held speech (the call is ending)."""
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None

    def _hear(self, heard: Sequence[Heard]) -> None:
        """Hand the listener's events to the turn-taking machine; do what it says."""
        for event in heard:
            if not isinstance(event, SpeechContinues):  # a start or an end: the caller is there
                self.last_heard = time.monotonic()
            if isinstance(event, SpeechStarted):
                self._log.debug("vad.speech_start", agent_audible=event.agent_audible)
            self._act(self._turns.hear(event))

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
                task = self._host.spawn(self._traced_turn(action.turn))
                self._turn_tasks.add(task)
                task.add_done_callback(self._turn_tasks.discard)
        self._schedule_recheck()

    async def _decide(self, evidence: TurnEvidence, ask: int) -> None:
        """Ask the turn detector about the held speech; the machine decides what it means."""
        decision = await self._detector.decide(evidence)
        if not decision.end_of_turn and decision.recheck_after_s is None:
            self._log.debug("turn.held", reason=decision.reason)
        self._act(self._turns.turn_decided(decision, ask=ask, at=time.monotonic()))

    def _schedule_recheck(self) -> None:
        self.close()
        deadline = self._turns.next_deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._recheck = asyncio.get_running_loop().call_later(delay, self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck = None
        self._act(self._turns.tick(at=time.monotonic()))

    # A committed turn

    async def _traced_turn(self, turn: CallerTurn) -> None:
        """`_take_turn` in the turn's span, from the end of the caller's speech until the reply
        starts; the reply's stages (LLM, tools, TTS) are its children."""
        with tracing.span("turn", start=turn.ended_at, turn=self.answered + 1):
            tracing.record("end_of_turn", start=turn.ended_at, end=turn.committed_at)
            await self._take_turn(turn)

    async def _take_turn(self, turn: CallerTurn) -> None:
        """Transcribe a committed turn; the machine says what follows from its words."""
        timer = TurnTimer(turn=self.answered + 1)
        timer.speech_ended = turn.ended_at
        timer.turn_committed = turn.committed_at
        timer.stt_started = time.monotonic()
        segment = new_segment_id()
        audio = PcmAudio(turn.audio, SAMPLE_RATE)
        with tracing.span("stt", audio_s=round(audio.duration_s, 3)):
            text = await self._transcribe(audio, segment)
        timer.stt_done = time.monotonic()
        actions = self._turns.transcribed(turn, text, at=time.monotonic())
        if not any(isinstance(action, AnswerTurn) for action in actions):
            # Interims may have been shown, but no words are committed (none heard, or STT
            # failed): the segment still ends, with a final empty version.
            await self._captions.end(segment)
        for action in actions:
            if isinstance(action, InterruptAgent):
                self._voice.interrupt()
            elif isinstance(action, AnswerTurn):
                await self._answer(action.turn, action.text, segment, timer)
            elif isinstance(action, SayRest):
                await self._voice.say_rest(action.reply, turn=self.answered)
            elif isinstance(action, IgnoreTurn):
                self._log.info("call.no_words", seconds=round(audio.duration_s, 2))
            elif isinstance(action, RecoverTranscription):
                await self._voice.fail_turn("stt", timer)

    async def _answer(self, turn: CallerTurn, text: str, segment: str, timer: TurnTimer) -> None:
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

    async def _transcribe(self, audio: PcmAudio, segment: str) -> str | None:
        """The segment's text, captioned as it comes; None when STT failed (after its retry)."""
        self._memory.usage.stt_audio_s += audio.duration_s
        try:
            stream = self._stt.transcribe_stream(audio, language=self._opts.stt_language)
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.transcript is not None:
                        return event.transcript.text.strip()
                    self._caption(event.text, segment, final=False)
            return ""
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
