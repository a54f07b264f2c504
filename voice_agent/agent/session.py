"""One call: the agent in the room, listening, thinking and speaking until the call ends.

Listening: the user's microphone (48 kHz) is resampled to 16 kHz and fed to the VAD. The turn ends
after `eou_silence_ms` of silence (the turn detector seam decides); the segment goes to STT, the
text to the LLM, and the reply is spoken (see `reply.py`).

Barge-in: user speech while the agent talks pauses the agent's audio at once. If the speech lasts
past `min_interruption_ms`, the interruption is confirmed: pending LLM and TTS work is cancelled
and the agent's turn is recorded as cut at what was actually played. Speech shorter than that (a
cough, an "mm-hm") resumes the agent where it paused; a confirmed interruption whose transcript is
empty also resumes, by saying the unheard rest of the interrupted reply.

Failures: STT, LLM and TTS each get one retry where that is safe; then the agent says a fallback
line synthesised at start (so it plays while TTS is down). After `max_consecutive_failures`
failed turns, or at `max_call_s`, or after `user_silence_timeout_s` without a word, the agent says
goodbye and hangs up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from livekit import rtc

from voice_agent.agent import ffi_routing, metrics
from voice_agent.agent.arrival_clock import ArrivalClock
from voice_agent.agent.call_tools import CallTools
from voice_agent.agent.captions import CaptionPublisher, new_segment_id
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.job import JobContext
from voice_agent.agent.lines import LineName, SpokenLines
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.reply import AgentReply, ReplyFailedError
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.call_record import CallJournal, CallRecordSink, CallUsage, TranscriptTurn
from voice_agent.exceptions import ProviderError
from voice_agent.pipeline.context import ConversationContext
from voice_agent.pipeline.turn import SilenceTurnDetector, TurnDetector, TurnEvidence
from voice_agent.pipeline.vad import SAMPLE_RATE as VAD_RATE
from voice_agent.pipeline.vad import VadConfig, VadEvent, VadEventType, VoiceActivityDetector
from voice_agent.pipeline.vad_model import SileroModelPool
from voice_agent.profile import ClientActionPolicy
from voice_agent.protocol import (
    ATTR_AGENT_STATE,
    TOPIC_AGENT_TURNS,
    AgentState,
    AgentTurnMessage,
    Stage,
    TurnKind,
)
from voice_agent.providers.base import PcmAudio
from voice_agent.providers.factory import Providers

# How long ending a call (leaving the room, storing the record) may take.
_FINISH_TIMEOUT_S = 5.0
# Microphone audio is handled in 64 ms frames (two VAD windows): a third of the per-frame work of
# 20 ms frames, at a cost of at most 64 ms more delay in noticing speech (barge-in, measured from
# the speech itself, stays under 150 ms at p95; docs/benchmarks.md).
_LISTEN_FRAME_MS = 64
# Onset needed before the agent pauses for the user: short, so barge-in is fast.
_PAUSE_ONSET_MS = 96
# How long the greeting waits for the caller's microphone track to be subscribed.
_USER_AUDIO_WAIT_S = 10.0


@dataclass(frozen=True, slots=True)
class _HeldSpeech:
    """The caller's speech of a turn not yet committed (16 kHz PCM and monotonic times)."""

    audio: bytes
    started: float
    ended: float


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """How the agent behaves on a call."""

    instructions: str
    greeting: str
    fallback_line: str = "Sorry, I'm having trouble right now. Could you say that again?"
    goodbye_line: str = "Thanks for calling. Goodbye!"
    failure_goodbye_line: str = (
        "I'm sorry, I'm having technical difficulties. Please try again later. Goodbye."
    )
    eou_silence_ms: int = 500
    min_interruption_ms: int = 400
    max_call_s: float = 1800.0
    user_silence_timeout_s: float = 60.0
    max_consecutive_failures: int = 3
    context_token_budget: int = 4000
    provider_timeout_s: float = 10.0
    stt_language: str | None = None
    user_join_timeout_s: float = 30.0


def spoken_lines(options: SessionOptions) -> SpokenLines:
    """The fixed lines of calls with these options (share one among a worker's calls)."""
    return SpokenLines(
        texts={
            LineName.FALLBACK: options.fallback_line,
            LineName.GOODBYE: options.goodbye_line,
            LineName.FAILURE_GOODBYE: options.failure_goodbye_line,
        }
    )


class CallSession:
    """Runs one call in its room; `await run()` returns when the call is over."""

    def __init__(
        self,
        *,
        job: JobContext,
        options: SessionOptions,
        providers: Providers,
        sink: CallRecordSink,
        journal: CallJournal,
        connect: Callable[[rtc.Room], Awaitable[None]] | None = None,
        turn_detector: TurnDetector | None = None,
        tools: Callable[[ClientChannel], CallTools] | None = None,
        client_policy: ClientActionPolicy | None = None,
        lines: SpokenLines | None = None,
        vad_models: SileroModelPool | None = None,
    ) -> None:
        self.job = job
        self.opts = options
        self.providers = providers
        self.sink = sink
        self.journal = journal
        self.log = job.log
        self.room = rtc.Room()
        self._connect = connect
        self.context = ConversationContext(
            system_prompt=options.instructions, max_tokens=options.context_token_budget
        )
        self.speaker: AgentSpeaker | None = None
        self.captions: CaptionPublisher | None = None
        self.state = AgentState.INITIALIZING
        self._state_updates: asyncio.Queue[AgentState] = asyncio.Queue()
        self._user: rtc.RemoteParticipant | None = None
        self._user_track_sid: str | None = None
        self._agent_track_sid: str | None = None
        self._user_joined = asyncio.Event()
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._reply_task: asyncio.Task[None] | None = None
        self._reply: AgentReply | None = None
        self._paused_reply = False
        self._confirmed_interruption: AgentReply | None = None
        self._pause_started = 0.0
        self._turn_counter = 0
        self._failures = 0
        self._last_user_activity = time.monotonic()
        self._lines = lines or spoken_lines(options)
        self._vad_models = vad_models or SileroModelPool(keep=0)
        self._listening = asyncio.Event()
        self._reply_segment = new_segment_id()
        self._end_after_turn: str | None = None
        self._held_speech: _HeldSpeech | None = None
        self._lines_ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.turn_detector: TurnDetector = turn_detector or SilenceTurnDetector(
            min_silence_ms=options.eou_silence_ms
        )
        self.channel = ClientChannel.for_room(
            self.room,
            policy=client_policy or ClientActionPolicy(),
            journal=journal,
            log=self.log,
        )
        # The dispatched user's identity is known now: the app may speak before it is seen.
        self.channel.user_identity = job.user_id
        self.tools: CallTools | None = tools(self.channel) if tools is not None else None
        self.usage = CallUsage()

    # Lifecycle

    async def run(self) -> None:
        """Join, greet, converse until the call ends, then hand the record to the sink."""
        reason = "error"
        metrics.ACTIVE_CALLS.inc()
        try:
            reason = await self._converse()
        except asyncio.CancelledError:
            # LiveKit ended the job or the worker shut down; keep a reason the call already had.
            reason = self._ended.result() if self._ended.done() else "cancelled"
            raise
        except Exception:
            self.log.exception("call.failed")
            reason = "error"
        finally:
            metrics.ACTIVE_CALLS.dec()
            finish = asyncio.ensure_future(self._finish(reason))
            try:
                await asyncio.shield(finish)
            except asyncio.CancelledError:
                # Cancelled again while saving: the record still gets its (bounded) chance.
                await asyncio.wait({finish}, timeout=_FINISH_TIMEOUT_S)
                raise

    async def _finish(self, reason: str) -> None:
        metrics.CALLS.labels(reason=reason).inc()
        try:
            await asyncio.wait_for(self._shutdown(), timeout=_FINISH_TIMEOUT_S)
        except TimeoutError:
            self.log.error("call.shutdown_timeout", timeout_s=_FINISH_TIMEOUT_S)
        self.journal.set_usage(self.usage)
        record = self.journal.finish(reason)
        self.log.info("call.ended", reason=reason, turns=len(record.transcript))
        try:
            await self.sink.submit(record)
        except Exception:
            self.log.exception("call.record_submit_failed")

    async def _converse(self) -> str:
        room = self.room
        room.on("participant_connected", self._on_participant)
        room.on("participant_disconnected", self._on_participant_left)
        room.on("track_subscribed", self._on_track)
        room.on("data_received", self.channel.on_data)
        if self._connect is not None:
            await self._connect(room)
        else:
            await room.connect(self.job.url, self.job.token)
        ffi_routing.narrow_room(room)
        self.log.info("call.joined", room=room.name)
        self._spawn(self._publish_states())
        self._set_state(AgentState.INITIALIZING)
        self.speaker, track = AgentSpeaker.create()
        publication = await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        self._agent_track_sid = publication.sid
        self.speaker.start()
        self.captions = CaptionPublisher(room.local_participant)
        for participant in list(room.remote_participants.values()):
            self._on_participant(participant)
            for pub in participant.track_publications.values():
                if pub.track is not None:
                    self._on_track(pub.track, pub, participant)
        self._lines_ready = self._spawn(
            self._lines.synthesize(self.providers.tts, timeout_s=self.opts.provider_timeout_s)
        )
        try:
            await asyncio.wait_for(self._user_joined.wait(), self.opts.user_join_timeout_s)
        except TimeoutError:
            return "no_user"
        self._spawn(self._watchdog())
        # Greet once the caller's microphone reaches the VAD: a reply the caller gives to the
        # greeting must not fall into the gap while their track is still being subscribed
        # (seconds, on a busy server). A caller without a microphone is greeted anyway.
        listening: asyncio.Future[Any] = asyncio.ensure_future(self._listening.wait())
        try:
            await asyncio.wait(
                {listening, self._ended},
                timeout=_USER_AUDIO_WAIT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            listening.cancel()
        if self._ended.done():  # the caller left (or the call failed) before being heard
            return await self._ended
        if not self._listening.is_set():
            self.log.warning("call.user_audio_missing", waited_s=_USER_AUDIO_WAIT_S)
            self.journal.add_event("user_audio_missing", waited_s=_USER_AUDIO_WAIT_S)
        await self._start_reply(fixed_text=self.opts.greeting, kind=TurnKind.GREETING, timer=None)
        return await self._ended

    async def _shutdown(self) -> None:
        pending = [*self._tasks, *([self._reply_task] if self._reply_task else [])]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_FINISH_TIMEOUT_S / 2)
        if self.speaker is not None:
            await self.speaker.aclose()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_FINISH_TIMEOUT_S / 2):
                await self.room.disconnect()

    def _end(self, reason: str) -> None:
        if not self._ended.done():
            self.log.info("call.ending", reason=reason)
            self._ended.set_result(reason)

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("call.task_failed", error=repr(exc))
            self._end("error")

    # Room events

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return
        # The caller is the identity the token service dispatched us for; anyone else is ignored.
        expected = self.job.user_id
        if self._user is None and expected in (None, participant.identity):
            self._user = participant
            self.channel.user_identity = participant.identity
            self.log.info("call.user_joined", identity=participant.identity)
            self.journal.add_event("user_joined", identity=participant.identity)
            self._user_joined.set()
        elif self._user is None or participant.identity != self._user.identity:
            self.log.warning("call.extra_participant_ignored", identity=participant.identity)
            self.journal.add_event("extra_participant_ignored", identity=participant.identity)

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if self._user is not None and participant.identity == self._user.identity:
            self.journal.add_event("user_left")
            self._end("user_left")

    def _on_track(
        self, track: rtc.Track, pub: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            self._user is not None
            and participant.identity == self._user.identity
            and track.kind == rtc.TrackKind.KIND_AUDIO
            and self._user_track_sid is None
        ):
            self._user_track_sid = pub.sid
            self._spawn(self._listen(track))

    # Listening

    async def _listen(self, track: rtc.Track) -> None:
        config = VadConfig(min_speech_ms=_PAUSE_ONSET_MS, min_silence_ms=self.opts.eou_silence_ms)
        model = await self._vad_models.acquire()
        vad = VoiceActivityDetector(config=config, model=model)
        # LiveKit's native side resamples the room's 48 kHz to 16 kHz before the frame reaches
        # Python: one FFI event per frame and a third of the bytes, instead of a second FFI
        # round trip per frame through a Python-side resampler.
        stream = rtc.AudioStream(
            track, sample_rate=VAD_RATE, num_channels=1, frame_size_ms=_LISTEN_FRAME_MS
        )
        clock = ArrivalClock(sample_rate=VAD_RATE)
        received = 0  # 16 kHz samples handed to the VAD so far
        self.log.info("call.listening", track_sid=self._user_track_sid)
        self.journal.add_event("user_audio", track_sid=self._user_track_sid)
        self._listening.set()
        try:
            async for event in stream:
                pcm = bytes(event.frame.data.cast("B"))
                received += len(pcm) // 2
                clock.mark(received, time.monotonic())
                for vad_event in vad.push(pcm):
                    self._on_vad(vad_event, clock)
                self._check_interruption(vad)
        finally:
            await stream.aclose()
            self._vad_models.release(model)

    def _on_vad(self, event: VadEvent, clock: ArrivalClock) -> None:
        self._last_user_activity = time.monotonic()
        if event.type is VadEventType.SPEECH_START:
            self.log.debug("vad.speech_start", at_s=round(event.start_s, 3))
            if self.speaker is not None and self.speaker.speaking:
                self.speaker.pause()
                self._paused_reply = True
                onset = clock.at(event.speech_start_sample)
                onset_to_stop_ms = round((time.monotonic() - onset) * 1000, 1)
                self.log.info("call.barge_in_paused", onset_to_stop_ms=onset_to_stop_ms)
                self.journal.add_event("barge_in", onset_to_stop_ms=onset_to_stop_ms)
                self._set_state(AgentState.LISTENING)
            return
        assert event.end_s is not None
        if self._paused_reply and self._confirmed_interruption is None:
            # Too short to be an interruption: carry on where the agent paused.
            self._paused_reply = False
            metrics.FALSE_INTERRUPTIONS.inc()
            speech_ms = round((event.end_s - event.start_s) * 1000)
            self.log.info("call.barge_in_resumed", speech_ms=speech_ms)
            self.journal.add_event("barge_in_resumed", speech_ms=speech_ms)
            assert self.speaker is not None
            self.speaker.resume()
            self._set_state(AgentState.SPEAKING)
            return
        held = self._held_speech
        audio = (held.audio if held else b"") + event.audio
        started = held.started if held else clock.at(event.speech_start_sample)
        assert event.speech_end_sample is not None
        ended = clock.at(event.speech_end_sample - 1)
        self._held_speech = _HeldSpeech(audio=audio, started=started, ended=ended)
        self._spawn(self._decide_turn(TurnEvidence.from_speech_end(event), audio))

    async def _decide_turn(self, evidence: TurnEvidence, audio: bytes) -> None:
        """Ask the turn detector; commit the user's turn, or hold it for more speech."""
        decision = await self.turn_detector.decide(replace(evidence, audio=audio))
        if not decision.end_of_turn and decision.recheck_after_s is not None:
            held = self._held_speech
            await asyncio.sleep(decision.recheck_after_s)
            if self._held_speech is not held:  # the caller spoke again: that segment decides
                return
        elif not decision.end_of_turn:
            self.log.debug("turn.held", reason=decision.reason)
            return
        held = self._held_speech
        if held is None:
            return
        self._held_speech = None
        timer = TurnTimer(turn=self._turn_counter + 1)
        timer.speech_ended = held.ended
        timer.turn_committed = time.monotonic()
        await self._user_turn(PcmAudio(held.audio, VAD_RATE), timer, held.started)

    def _check_interruption(self, vad: VoiceActivityDetector) -> None:
        if (
            self._paused_reply
            and self._confirmed_interruption is None
            and vad.speech_duration_s * 1000 >= self.opts.min_interruption_ms
        ):
            self._confirm_interruption()

    def _confirm_interruption(self) -> None:
        reply = self._reply
        self._confirmed_interruption = reply
        self._paused_reply = False
        assert self.speaker is not None
        self.speaker.stop()
        if self._reply_task is not None:
            self._reply_task.cancel()
        self.log.info("call.interrupted")
        self.journal.add_event("interrupted")

    async def _user_turn(self, audio: PcmAudio, timer: TurnTimer, started: float) -> None:
        interrupted = self._confirmed_interruption
        timer.stt_started = time.monotonic()
        segment = new_segment_id()
        text = await self._transcribe(audio, segment)
        timer.stt_done = time.monotonic()
        if text is None:
            self._confirmed_interruption = None
            line = await self._recover("stt")
            await self._publish_turn(
                AgentTurnMessage(
                    kind=TurnKind.REPLY, agent_text=line, failed="stt", metrics=_figures(timer)
                )
            )
            if self._end_after_turn:
                self._end(self._end_after_turn)
            return
        if not text.strip():
            self._confirmed_interruption = None
            if interrupted is not None:
                await self._resume_after(interrupted)
            else:
                self.log.info("call.no_words", seconds=round(audio.duration_s, 2))
            return
        self._confirmed_interruption = None
        self._turn_counter += 1
        now = time.time()
        self.journal.add_turn(
            TranscriptTurn(
                speaker="user",
                text=text,
                started_at=now - (time.monotonic() - started),
                ended_at=now,
            )
        )
        self.log.info("turn.user", text_chars=len(text))
        self._caption_user(text, segment, final=True)
        if self._reply_task is not None and not self._reply_task.done():
            self._confirm_interruption()
            await asyncio.gather(self._reply_task, return_exceptions=True)
        self.context.add_user(text)
        await self._start_reply(user_text=text, kind=TurnKind.REPLY, timer=timer)

    def _caption_user(self, text: str, segment: str, *, final: bool) -> None:
        if self.captions is None or self._user is None or not text:
            return
        self._spawn(
            self.captions.publish(
                text=text,
                segment_id=segment,
                final=final,
                track_sid=self._user_track_sid,
                sender_identity=self._user.identity,
            )
        )

    async def _transcribe(self, audio: PcmAudio, segment: str) -> str | None:
        """The segment's text, captioned as it comes; None when STT failed (after its retry)."""
        self.usage.stt_audio_s += audio.duration_s
        try:
            stream = self.providers.stt.transcribe_stream(audio, language=self.opts.stt_language)
            async with contextlib.aclosing(stream):
                async for event in stream:
                    if event.transcript is not None:
                        return event.transcript.text.strip()
                    self._caption_user(event.text, segment, final=False)
            return ""
        except ProviderError as e:
            self.log.warning("stt.failed", error=str(e), retryable=e.retryable)
            return None

    # Speaking

    async def _start_reply(
        self,
        *,
        kind: TurnKind,
        timer: TurnTimer | None,
        user_text: str = "",
        fixed_text: str | None = None,
    ) -> None:
        assert self.speaker is not None
        timer = timer or TurnTimer(turn=self._turn_counter)
        tools = self.tools if fixed_text is None else None
        if tools is not None:
            tools.begin_turn(timer.turn)
        reply = AgentReply(
            speaker=self.speaker,
            tts=self.providers.tts,
            timer=timer,
            llm=None if fixed_text is not None else self.providers.llm,
            messages=self.context.messages() if fixed_text is None else (),
            fixed_text=fixed_text,
            on_first_audio=self._on_first_audio,
            on_chunk=self._on_reply_chunk,
            tools=tools,
            max_tool_rounds=tools.max_rounds if tools is not None else 0,
        )
        self._reply_segment = new_segment_id()
        self._reply = reply
        if fixed_text is None:
            self._set_state(AgentState.THINKING)
        self._reply_task = asyncio.ensure_future(self._run_reply(reply, kind, user_text, timer))

    def _on_reply_chunk(self, _chunk: str) -> None:
        """Caption the reply as it is spoken: the text so far, not yet final."""
        if self.captions is None or self._reply is None:
            return
        self._spawn(
            self.captions.publish(
                text=" ".join(self._reply.chunks),
                segment_id=self._reply_segment,
                final=False,
                track_sid=self._agent_track_sid,
            )
        )

    def _on_first_audio(self, at: float) -> None:
        self._set_state(AgentState.SPEAKING)

    async def _run_reply(
        self, reply: AgentReply, kind: TurnKind, user_text: str, timer: TurnTimer
    ) -> None:
        started = time.time()
        segment = self._reply_segment
        interrupted = False
        failed: Stage | None = None
        try:
            outcome = await reply.run()
            heard = outcome.heard
            self._failures = 0
        except asyncio.CancelledError:
            interrupted = True
            heard = reply.heard_text()
        except ReplyFailedError as e:
            failed = e.stage
            heard = reply.heard_text()
            self.log.warning("reply.failed", stage=failed, error=str(e))
        timer.interrupted = interrupted
        self._count_usage(reply)
        for message in reply.committed:  # finished tool rounds, with every call's result
            self.context.add(message)
        said_last = reply.heard_text(last_round_only=True) if reply.committed else heard
        if said_last or interrupted:
            self.context.add_assistant(said_last)
        self.journal.add_turn(
            TranscriptTurn(
                speaker="agent",
                text=heard,
                started_at=started,
                ended_at=time.time(),
                interrupted=interrupted,
                kind=kind,
            )
        )
        record = timer.export()
        if kind is TurnKind.REPLY:
            self.journal.add_metrics(record)
        figures = record.model_dump(exclude={"turn", "interrupted"})
        self.log.info(
            "turn.agent", kind=kind, interrupted=interrupted, heard_chars=len(heard), **figures
        )
        if failed is None and not interrupted and not self._ended.done():
            self._set_state(AgentState.LISTENING)
        if self.captions is not None and heard:
            await self.captions.publish(
                text=heard, segment_id=segment, final=True, track_sid=self._agent_track_sid
            )
        if failed is not None:
            heard = f"{heard} {await self._recover(failed)}".strip()
        await self._publish_turn(
            AgentTurnMessage(
                kind=kind,
                user_text=user_text,
                agent_text=heard,
                interrupted=interrupted,
                failed=failed,
                metrics=figures,
            )
        )
        if self._end_after_turn:
            self._end(self._end_after_turn)

    def _count_usage(self, reply: AgentReply) -> None:
        self.usage.tts_audio_s += reply.tts_audio_s
        self.usage.llm_requests += reply.usage.llm_requests
        self.usage.llm_prompt_tokens += reply.usage.prompt_tokens
        self.usage.llm_completion_tokens += reply.usage.completion_tokens

    async def _resume_after(self, reply: AgentReply) -> None:
        """An interruption held no words: say the part of the reply the user did not hear."""
        heard = reply.heard_text()
        full = " ".join(reply.chunks)
        rest = full[len(heard) :].strip() if full.startswith(heard) else full
        metrics.FALSE_INTERRUPTIONS.inc()
        self.log.info("call.resume_after_interruption", rest_chars=len(rest))
        if rest:
            await self._start_reply(fixed_text=rest, kind=TurnKind.REPLY, timer=None)

    async def _say_line(self, name: LineName) -> str:
        """Say a pre-synthesised line (works while TTS is down); the text, or "" if unavailable."""
        assert self.speaker is not None
        if name not in self._lines.audio and not self._lines_ready.done():
            # A failure this early in the call: the lines are still being synthesised.
            await asyncio.wait({self._lines_ready}, timeout=self.opts.provider_timeout_s)
        pcm = self._lines.audio.get(name)
        text = self._lines.texts[name]
        self.journal.add_event("line_spoken", line=name, presynthesised=pcm is not None)
        if pcm is None:
            self.log.error("call.line_unavailable", line=name)
            return ""
        started = time.time()
        self._set_state(AgentState.SPEAKING)
        self.speaker.begin_reply()
        self.speaker.push_frames(pcm, segment=0)
        await self.speaker.wait_idle()
        kind = TurnKind.FALLBACK if name is LineName.FALLBACK else TurnKind.GOODBYE
        self.journal.add_turn(
            TranscriptTurn(
                speaker="agent", text=text, started_at=started, ended_at=time.time(), kind=kind
            )
        )
        if self.captions is not None:
            await self.captions.publish(
                text=text, segment_id=new_segment_id(), final=True, track_sid=self._agent_track_sid
            )
        if not self._ended.done():
            self._set_state(AgentState.LISTENING)
        return text

    async def _recover(self, stage: Stage) -> str:
        """A stage failed after its retry: say the fallback line, or, after too many failed
        turns in a row, apologise and end the call. The line said."""
        metrics.PROVIDER_FAILURES.labels(stage=stage).inc()
        self._failures += 1
        self.journal.add_event("stage_failed", stage=stage, consecutive=self._failures)
        if self._failures < self.opts.max_consecutive_failures:
            return await self._say_line(LineName.FALLBACK)
        self._end_after_turn = "repeated_failures"  # once the turn is published
        return await self._say_line(LineName.FAILURE_GOODBYE)

    async def _hang_up(self, line: LineName, reason: str) -> None:
        if self._reply_task is not None and not self._reply_task.done():
            self._confirm_interruption()
            await asyncio.gather(self._reply_task, return_exceptions=True)
        text = await self._say_line(line)
        await self._publish_turn(AgentTurnMessage(kind=TurnKind.GOODBYE, agent_text=text))
        self._end(reason)

    async def _watchdog(self) -> None:
        started = time.monotonic()
        while not self._ended.done():
            await asyncio.sleep(0.5)
            now = time.monotonic()
            if now - started >= self.opts.max_call_s:
                await self._hang_up(LineName.GOODBYE, "max_duration")
                return
            idle = self.state is AgentState.LISTENING and (
                self._reply_task is None or self._reply_task.done()
            )
            if idle and now - self._last_user_activity >= self.opts.user_silence_timeout_s:
                await self._hang_up(LineName.GOODBYE, "user_silent")
                return

    # Room output

    def _set_state(self, state: AgentState) -> None:
        """Enter `state` now; the room hears of it in order, without the caller waiting."""
        if state is self.state and state is not AgentState.INITIALIZING:
            return
        previous, self.state = self.state, state
        self.log.info("agent.state", state=state.value, previous=previous.value)
        if state is AgentState.LISTENING:
            self._last_user_activity = max(self._last_user_activity, time.monotonic())
        self._state_updates.put_nowait(state)

    async def _publish_states(self) -> None:
        """Send each state change to the room as the `lk.agent.state` attribute, in order.

        An attribute update waits for the server's answer, which takes long when the server is
        busy: on the turn's critical path it once held back the model request by seconds.
        """
        while True:
            state = await self._state_updates.get()
            with contextlib.suppress(Exception):
                await self.room.local_participant.set_attributes({ATTR_AGENT_STATE: state.value})

    async def _publish_turn(self, message: AgentTurnMessage) -> None:
        with contextlib.suppress(Exception):
            await self.room.local_participant.publish_data(
                message.model_dump_json(), reliable=True, topic=TOPIC_AGENT_TURNS
            )


def _figures(timer: TurnTimer) -> dict[str, float | None]:
    """A turn's latency figures for the app (without the turn number and interruption flag)."""
    return timer.export().model_dump(exclude={"turn", "interrupted"})
