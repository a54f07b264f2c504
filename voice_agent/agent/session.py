"""One call: the agent in the room, listening, thinking and speaking until the call ends.

`CallSession` wires the parts of a call together and owns its lifecycle: it joins the room (the
`CallRoom` seam: LiveKit in production, a fake in tests), accepts the dispatched caller, greets
them once their microphone is heard, and lets the `Conversation` (the caller's side: listening,
turn taking, answering) and the `AgentVoice` (the agent's side: replies, fixed lines, recovery)
run the call. It publishes the agent's state, watches the call's time limits, and at the end
hands the call record to the sink.

Barge-in, in short (the rules are in `turn_taking.py`): the caller's speech over the agent pauses
it at once; past `min_interruption_ms` the reply is cancelled and recorded as cut at what was
heard; shorter sounds resume it where it paused; an interruption whose transcript is empty says
the unheard rest of the reply. Failures: each stage retries by the providers' one rule, then the
agent says a fallback line; after `max_consecutive_failures` failed turns, at `max_call_s`, or
after `user_silence_timeout_s` without a word, it says goodbye and hangs up.

Hanging up is done the way LiveKit's own agents do it: the agent finishes its captions, sets
`end_reason` on itself and disconnects the caller through the server API before it leaves (the
runner then deletes the room), so the caller's client sees a clean disconnect
(`PARTICIPANT_REMOVED`, with the reason) instead of an agent that left the room unexpectedly.
LiveKit's agents delete the room while still in it; here the caller is removed first because the
server closes a deleted room's participants in no set order, so a caller could still see the
agent leave first, which LiveKit's components report as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from voice_agent.agent import metrics
from voice_agent.agent.call_rooms import CallRooms
from voice_agent.agent.call_tools import BackgroundResult, CallTools
from voice_agent.agent.captions import CaptionPublisher
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.conversation import Conversation
from voice_agent.agent.job import JobContext
from voice_agent.agent.lines import LineName, SpokenLines
from voice_agent.agent.listener import SAMPLE_RATE
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.options import SessionOptions, spoken_lines
from voice_agent.agent.pre_connect import PreConnectBuffers
from voice_agent.agent.reply import AgentReply
from voice_agent.agent.room import CallerAudio, CallRoom, LiveKitRoom
from voice_agent.agent.turn_taking import Floor, Speculation, TurnTaking
from voice_agent.agent.typed_chat import TypedChat
from voice_agent.agent.voice import AgentVoice, CallMemory
from voice_agent.call_record import CallJournal, CallRecordSink, CallUsage
from voice_agent.logging import Logger
from voice_agent.pipeline.acoustic_turn import HybridTurnDetector, SmartTurnDetector
from voice_agent.pipeline.completeness import TranscriptTurnDetector
from voice_agent.pipeline.context import ConversationContext
from voice_agent.pipeline.smart_turn import SmartTurnModels
from voice_agent.pipeline.turn import SilenceTurnDetector, TurnDetector
from voice_agent.pipeline.vad_model import SileroModelPool
from voice_agent.profile import ClientActionPolicy
from voice_agent.protocol import (
    ATTR_AGENT_STATE,
    ATTR_END_REASON,
    TOPIC_CLIENT_ACTIONS,
    TOPIC_LEGACY_CHAT,
    AgentState,
    TurnKind,
)
from voice_agent.providers.factory import Providers

# How long ending a call (leaving the room, storing the record) may take.
_FINISH_TIMEOUT_S = 5.0
# How long the greeting waits for the caller's microphone track to be subscribed.
_USER_AUDIO_WAIT_S = 10.0
# How often the watchdog looks at the call's time limits.
_WATCHDOG_INTERVAL_S = 0.5
AGENT_HANG_UPS = frozenset({"max_duration", "user_silent", "repeated_failures"})
"""End reasons of a call the agent hung up (after its goodbye): it disconnects the caller."""


ACOUSTIC_DETECTORS = frozenset({"smart_turn", "hybrid"})
"""Turn detectors that need the Smart Turn model."""


def _turn_detector(
    options: SessionOptions, models: SmartTurnModels | None, log: Logger
) -> TurnDetector:
    """The end-of-turn detector the options name; the transcript detector in place of an
    acoustic one whose model is not available (a `turn.model_unavailable` warning)."""
    transcript = TranscriptTurnDetector(
        silence_ms=options.eou_silence_ms,
        incomplete_silence_ms=options.eou_incomplete_ms,
        complete_silence_ms=options.eou_complete_ms,
        punctuated=options.stt_punctuates,
        level_pitch_silence_ms=options.eou_level_pitch_ms or None,
        min_confidence=options.eou_min_confidence,
    )
    if options.turn_detector in ACOUSTIC_DETECTORS:
        if models is None or not models.available:
            log.warning(
                "turn.model_unavailable",
                detector=options.turn_detector,
                path=str(models.path if models is not None else options.smart_turn_model),
                fallback="transcript",
            )
            return transcript
        if options.turn_detector == "hybrid":
            return HybridTurnDetector(
                model=models,
                threshold=options.smart_turn_threshold,
                silence_ms=options.eou_silence_ms,
                incomplete_silence_ms=options.eou_incomplete_ms,
                unsure_silence_ms=options.eou_unsure_ms,
                complete_silence_ms=options.eou_complete_ms,
                punctuated=options.stt_punctuates,
                min_confidence=options.eou_min_confidence,
            )
        return SmartTurnDetector(
            model=models,
            threshold=options.smart_turn_threshold,
            silence_ms=options.eou_silence_ms,
            incomplete_silence_ms=options.eou_incomplete_ms,
        )
    if options.turn_detector == "transcript":
        return transcript
    return SilenceTurnDetector(min_silence_ms=options.eou_silence_ms)


def needed_turn_models(options: SessionOptions) -> SmartTurnModels | None:
    """The Smart Turn model the options need (not loaded yet), if they need one."""
    if options.turn_detector not in ACOUSTIC_DETECTORS or options.smart_turn_model is None:
        return None
    return SmartTurnModels(options.smart_turn_model)


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
        room: CallRoom | None = None,
        turn_detector: TurnDetector | None = None,
        tools: Callable[[ClientChannel], CallTools] | None = None,
        client_policy: ClientActionPolicy | None = None,
        lines: SpokenLines | None = None,
        vad_models: SileroModelPool | None = None,
        rooms: CallRooms | None = None,
        turn_models: SmartTurnModels | None = None,
    ) -> None:
        self.job = job
        self.opts = options
        self.providers = providers
        self.sink = sink
        self.journal = journal
        self.log = job.log
        self.room: CallRoom = room or LiveKitRoom(
            url=job.url,
            token=job.token,
            remove=(
                (lambda name, callers: rooms.remove(name, callers, call_id=job.call_id))
                if rooms is not None
                else None
            ),
        )
        self.captions = CaptionPublisher(self.room)
        self.pre_connect = PreConnectBuffers(sample_rate=SAMPLE_RATE, log=self.log)
        self.context = ConversationContext(
            system_prompt=options.instructions, max_tokens=options.context_token_budget
        )
        self.usage = CallUsage()
        self.state = AgentState.INITIALIZING
        self.turns: TurnTaking[AgentReply] = TurnTaking(
            min_interruption_ms=options.min_interruption_ms,
            # The VAD ends utterances at the short pause: a cough over the agent resumes it only
            # after the silence that used to end an utterance.
            resume_after_ms=max(options.eou_silence_ms - options.speech_pause_ms, 0),
            backchannel_max_ms=options.backchannel_max_ms or None,
            speculation=Speculation(
                max_per_turn=options.speculation_max_per_turn,
                max_wasted_per_call=options.speculation_max_wasted,
            ),
        )
        self._state_updates: asyncio.Queue[AgentState] = asyncio.Queue()
        self._user: str | None = None  # the caller's identity, once joined
        self._user_track_sid: str | None = None
        self._user_joined = asyncio.Event()
        self._listening = asyncio.Event()
        self._ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._listening_since = time.monotonic()
        self._greeted = False
        self._vad_models = vad_models or SileroModelPool(keep=0)
        self.channel = ClientChannel(
            policy=client_policy or ClientActionPolicy(),
            journal=journal,
            log=self.log,
            publish=lambda text: self.room.publish_data(text, topic=TOPIC_CLIENT_ACTIONS),
        )
        # The dispatched user's identity is known now: the app may speak before it is seen.
        self.channel.user_identity = job.user_id
        self.tools: CallTools | None = tools(self.channel) if tools is not None else None
        memory = CallMemory(context=self.context, journal=journal, usage=self.usage)
        self.voice = AgentVoice(
            host=self,
            room=self.room,
            memory=memory,
            options=options,
            providers=providers,
            lines=lines or spoken_lines(options),
            captions=self.captions,
            tools=self.tools,
            turns=self.turns,
            log=self.log,
        )
        self.conversation = Conversation(
            host=self,
            voice=self.voice,
            turns=self.turns,
            turn_detector=turn_detector
            or _turn_detector(options, turn_models or needed_turn_models(options), self.log),
            stt=providers.stt,
            memory=memory,
            captions=self.captions,
            options=options,
            log=self.log,
        )
        self.typed = TypedChat(journal=journal, log=self.log, answer=self._answer_typed)
        self.typed.user_identity = job.user_id
        # Background tools' outcomes wait here until a reply brings them into the conversation.
        self._background: list[BackgroundResult] = []
        self._telling_background = False
        if self.tools is not None:
            self.tools.on_background_result = self._background_ended
        self.voice.before_reply = self._bring_in_background

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
        except Exception:  # any failure ends this call (logged), never the worker
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
        # The journal holds the end before the room closes: LiveKit's room_finished webhook
        # may read it from there before the record reaches the sink.
        record = self.journal.finish(reason)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_FINISH_TIMEOUT_S / 2):
                if reason in AGENT_HANG_UPS:
                    await self._hang_up_caller(reason)
                await self.room.leave()
        self.log.info("call.ended", reason=reason, turns=len(record.transcript))
        try:
            await self.sink.submit(record)
        except Exception:  # the sink logs its own failures; the worker must go on
            self.log.exception("call.record_submit_failed")

    async def _converse(self) -> str:
        await self.room.join(self)
        self.log.info("call.joined", room=self.room.name)
        self.spawn(self._publish_states())
        self.set_state(AgentState.INITIALIZING)
        await self.voice.open()
        self.room.report_present()
        try:
            await asyncio.wait_for(self._user_joined.wait(), self.opts.user_join_timeout_s)
        except TimeoutError:
            return "no_user"
        # Ready for the caller: out of `initializing` now, not at the greeting's first audio,
        # which can take long on a slow start (LiveKit's clients give up after 20 s).
        self.set_state(AgentState.LISTENING)
        self.spawn(self._watchdog())
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
        self._greeted = True
        await self.voice.start(
            fixed_text=self.opts.greeting,
            kind=TurnKind.GREETING,
            timer=TurnTimer(turn=self.conversation.answered),
        )
        return await self._ended

    async def _shutdown(self) -> None:
        self.conversation.close()
        if self.tools is not None:  # background runs end first, recorded as cancelled
            await self.tools.aclose(timeout_s=_FINISH_TIMEOUT_S / 4)
        pending = [*self._tasks]
        if (reply := self.voice.cancel()) is not None:
            pending.append(reply)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=_FINISH_TIMEOUT_S / 2)
        await self.captions.aclose()  # every caption final, every stream finished
        await self.voice.aclose()

    async def _hang_up_caller(self, reason: str) -> None:
        """The reason on the agent, then the caller disconnected (the attribute update travels
        the signalling path ahead of the caller's disconnect)."""
        with contextlib.suppress(Exception):  # the caller then sees the removal without reason
            await self.room.set_attributes({ATTR_END_REASON: reason})
        try:
            await self.room.hang_up()
        except Exception as e:  # noqa: BLE001 - the runner still closes the room after the call
            self.log.warning("call.room_close_failed", error=str(e))

    @property
    def ending(self) -> bool:
        """Whether the call is ending."""
        return self._ended.done()

    def end(self, reason: str) -> None:
        """End the call with `reason` (the first reason given wins)."""
        if not self._ended.done():
            self.log.info("call.ending", reason=reason)
            self._ended.set_result(reason)

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task of this call; one that fails ends the call."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("call.task_failed", error=repr(exc))
            self.end("error")

    # Room events

    def participant_joined(self, identity: str, *, agent: bool) -> None:
        """The caller is the identity the token service dispatched us for; others are ignored."""
        if agent:
            return
        expected = self.job.user_id
        if self._user is None and expected in (None, identity):
            self._user = identity
            self.channel.user_identity = identity
            self.typed.user_identity = identity
            self.log.info("call.user_joined", identity=identity)
            self.journal.add_event("user_joined", identity=identity)
            self._user_joined.set()
        elif identity != self._user:
            self.log.warning("call.extra_participant_ignored", identity=identity)
            self.journal.add_event("extra_participant_ignored", identity=identity)

    def participant_left(self, identity: str) -> None:
        """The caller leaving ends the call."""
        if self._user is not None and identity == self._user:
            self.journal.add_event("user_left")
            self.end("user_left")

    def microphone(self, identity: str, audio: CallerAudio) -> None:
        """The caller's first audio track is the one the agent listens to."""
        if self._user is not None and identity == self._user and self._user_track_sid is None:
            self._user_track_sid = audio.sid

            def listening() -> None:
                self.log.info("call.listening", track_sid=audio.sid)
                self.journal.add_event("user_audio", track_sid=audio.sid)
                self._listening.set()

            self.spawn(
                self.conversation.listen(
                    audio,
                    caller=identity,
                    models=self._vad_models,
                    on_listening=listening,
                    pre_connect=self.pre_connect,
                )
            )

    def data_received(self, data: bytes, *, topic: str | None, sender: str | None) -> None:
        """App messages go to the call's client channel; legacy chat packets to typed chat."""
        if topic == TOPIC_LEGACY_CHAT:
            self.typed.legacy_received(data, sender=sender)
            return
        self.channel.on_data(data, topic=topic, sender=sender)

    def pre_connect_audio(
        self,
        chunks: AsyncIterator[bytes],
        *,
        sender: str,
        attributes: Mapping[str, str],
        mime_type: str,
    ) -> None:
        """The caller's audio from before the agent joined: checked, decoded, heard first."""
        self.spawn(
            self.pre_connect.receive(
                chunks,
                sender=sender,
                user=self._user or self.job.user_id,
                attributes=attributes,
                mime_type=mime_type,
            )
        )

    def chat_received(self, text: str, *, sender: str, message_id: str) -> None:
        """Typed chat (`lk.chat`) is checked, then answered like the caller's words."""
        self.typed.text_received(text, sender=sender, message_id=message_id)

    def _answer_typed(self, text: str) -> None:
        if not self.ending:
            self.spawn(self.conversation.answer_typed(text))

    # Time limits

    async def _watchdog(self) -> None:
        started = time.monotonic()
        while not self._ended.done():
            await asyncio.sleep(_WATCHDOG_INTERVAL_S)
            now = time.monotonic()
            if now - started >= self.opts.max_call_s:
                await self.voice.hang_up(LineName.GOODBYE, "max_duration")
                return
            idle = self._greeted and self.state is AgentState.LISTENING and not self.voice.busy
            if idle and self._background and self._may_speak():
                self._telling_background = True
                self.spawn(self._tell_background())
            quiet_since = max(self.conversation.last_heard, self._listening_since)
            if idle and now - quiet_since >= self.opts.user_silence_timeout_s:
                await self.voice.hang_up(LineName.GOODBYE, "user_silent")
                return

    # Background tools

    def _may_speak(self) -> bool:
        """Nobody has the floor, and no caller turn awaits its end, transcript or answer."""
        turns = self.turns
        if self._telling_background or self.conversation.answering:
            return False
        return turns.floor is Floor.LISTENING and not turns.holding

    def _background_ended(self, result: BackgroundResult) -> None:
        self.journal.add_event("background_tool_ended", tool=result.result.tool)
        self._background.append(result)

    def _bring_in_background(self) -> None:
        """Outcomes of background tools join the conversation before the next model reply."""
        done, self._background = self._background, []
        for result in done:
            self.journal.add_event("background_result_told", tool=result.result.tool)
            for message in result.messages():
                self.context.add(message)

    async def _tell_background(self) -> None:
        """The caller is not speaking and the agent is quiet: tell the outcomes now."""
        try:
            if self._background:  # a reply may have told them meanwhile
                timer = TurnTimer(turn=self.conversation.answered)
                await self.voice.start(kind=TurnKind.REPLY, timer=timer)
        finally:
            self._telling_background = False

    # The agent's state

    def set_state(self, state: AgentState) -> None:
        """Enter `state` now; the room hears of it in order, without the caller waiting."""
        if state is self.state and state is not AgentState.INITIALIZING:
            return
        previous, self.state = self.state, state
        self.log.info("agent.state", state=state.value, previous=previous.value)
        if state is AgentState.LISTENING:
            self._listening_since = time.monotonic()
        self._state_updates.put_nowait(state)

    async def _publish_states(self) -> None:
        """Send each state change to the room as the `lk.agent.state` attribute, in order.

        An attribute update waits for the server's answer, which takes long when the server is
        busy: on the turn's critical path it once held back the model request by seconds.
        """
        while True:
            state = await self._state_updates.get()
            with contextlib.suppress(Exception):  # a lost update is superseded by the next
                await self.room.set_attributes({ATTR_AGENT_STATE: state.value})
