"""The agent's side of a call: its replies and fixed lines, what follows a failure, its captions.

`AgentVoice` starts a reply (the greeting, an answer, the rest of an interrupted reply), runs it,
and afterwards commits what the caller heard to the conversation, journals the turn, observes its
latency, captions it and sends the turn summary to the app. When a stage fails it says the
fallback line synthesised at call start (so it plays while TTS is down) and, after too many failed
turns in a row, apologises and ends the call once the turn is published. It reports each reply's
lifecycle to the turn-taking machine, which decides when the caller interrupts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from voice_agent.agent import metrics
from voice_agent.agent.call_tools import CallTools
from voice_agent.agent.captions import CaptionPublisher, new_segment_id
from voice_agent.agent.lines import LineName, SpokenLines
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.options import SessionOptions
from voice_agent.agent.reply import AgentReply, ReplyFailedError, ReplyOutcome
from voice_agent.agent.room import CallRoom
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.agent.spoken import SpokenOutput
from voice_agent.agent.turn_taking import TurnTaking
from voice_agent.call_record import CallJournal, CallUsage, TranscriptTurn
from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.logging import Logger
from voice_agent.pipeline.context import ConversationContext
from voice_agent.protocol import TOPIC_AGENT_TURNS, AgentState, AgentTurnMessage, Stage, TurnKind
from voice_agent.providers.factory import Providers


@dataclass(frozen=True, kw_only=True)
class CallMemory:
    """What a call keeps as it goes: the model's conversation, the journal, provider usage."""

    context: ConversationContext
    journal: CallJournal
    usage: CallUsage


@dataclass(eq=False)
class PreparedReply:
    """A speculative answer: generating and synthesising its first sentence, unplayed, until
    the turn is committed (`AgentVoice.adopt`) or the caller goes on (`AgentVoice.discard`)."""

    reply: AgentReply
    output: SpokenOutput
    release: asyncio.Event
    messages: list[ChatMessage]
    """What the model was sent: the conversation then, and the caller's speculative words."""
    task: asyncio.Task[ReplyOutcome]
    segment: str = field(default_factory=new_segment_id)


class HeldTools:
    """A speculative reply's tools: offered to the model, run only once the turn is committed.

    Calls of a generation discarded before its turn was committed never ran and leave no trace.
    """

    def __init__(self, tools: CallTools, release: asyncio.Event) -> None:
        self._tools = tools
        self._release = release

    def schemas(self) -> list[dict[str, Any]] | None:
        return self._tools.schemas()

    async def execute(
        self, calls: Sequence[ToolCall], *, say: Callable[[str], None], into: list[ChatMessage]
    ) -> str | None:
        await self._release.wait()
        return await self._tools.execute(calls, say=say, into=into)

    def skip(self, calls: Sequence[ToolCall], reason: str) -> None:
        if self._release.is_set():
            self._tools.skip(calls, reason)


class VoiceHost(Protocol):
    """What the agent's voice needs of its call session."""

    @property
    def ending(self) -> bool:
        """Whether the call is ending."""
        ...

    def set_state(self, state: AgentState) -> None:
        """Publish the agent's state (`lk.agent.state`)."""
        ...

    def end(self, reason: str) -> None:
        """End the call."""
        ...

    def spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        """Run `coro` as a task the session owns (and cancels when the call ends)."""
        ...


class AgentVoice:
    """Speaks for the agent in one call: replies, fixed lines, recovery (see module docstring)."""

    def __init__(
        self,
        *,
        host: VoiceHost,
        room: CallRoom,
        memory: CallMemory,
        options: SessionOptions,
        providers: Providers,
        lines: SpokenLines,
        captions: CaptionPublisher,
        tools: CallTools | None,
        turns: TurnTaking[AgentReply],
        log: Logger,
    ) -> None:
        self._host = host
        self._room = room
        self._memory = memory
        self._opts = options
        self._providers = providers
        self._lines = lines
        self._tools = tools
        self._turns = turns
        self._log = log
        self.speaker, self._track = AgentSpeaker.create()
        self._captions = captions
        self._track_sid: str | None = None
        self._reply: AgentReply | None = None
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._end_after_turn: str | None = None
        self._lines_ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.before_reply: Callable[[], None] | None = None
        """Called as a model reply starts, before it reads the conversation."""

    async def open(self) -> None:
        """Publish the agent's voice track and start rendering the fixed lines."""
        self._track_sid = await self._room.publish_voice(self._track)
        self.speaker.start()
        self._lines_ready = self._host.spawn(
            self._lines.synthesize(self._providers.tts, timeout_s=self._opts.provider_timeout_s)
        )

    @property
    def track_sid(self) -> str | None:
        """The id of the agent's voice track, once published."""
        return self._track_sid

    @property
    def busy(self) -> bool:
        """Whether a reply is running."""
        return self._task is not None and not self._task.done()

    def cancel(self) -> asyncio.Task[None] | None:
        """Cancel the running reply because the call ends; the task to wait for, if any."""
        if self._task is None or self._task.done():
            return None
        self._task.cancel()
        return self._task

    async def aclose(self) -> None:
        """Stop feeding the voice track and release it."""
        await self.speaker.aclose()

    # Replies

    async def start(
        self,
        *,
        kind: TurnKind,
        timer: TurnTimer,
        user_text: str = "",
        fixed_text: str | None = None,
    ) -> None:
        """Start a reply (a model's answer, or `fixed_text`) once the previous one has ended."""
        await self.settle()
        tools = self._tools if fixed_text is None else None
        if fixed_text is None and self.before_reply is not None:
            self.before_reply()
        if tools is not None:
            tools.begin_turn(timer.turn)
        output = SpokenOutput(speaker=self.speaker, tts=self._providers.tts, timer=timer)
        segment = new_segment_id()
        reply = AgentReply(
            output=output,
            timer=timer,
            llm=None if fixed_text is not None else self._providers.llm,
            messages=self._memory.context.messages() if fixed_text is None else (),
            fixed_text=fixed_text,
            tools=tools,
            max_tool_rounds=tools.max_rounds if tools is not None else 0,
        )
        reply.on_first_output = lambda _at: self._first_output(reply)
        reply.on_chunk = lambda _chunk: self._caption(" ".join(reply.chunks), segment, final=False)
        self._reply = reply
        self._turns.reply_started(reply, at=time.monotonic())
        if fixed_text is None:
            self._host.set_state(AgentState.THINKING)
        self._task = asyncio.ensure_future(
            self._run(reply, output, kind=kind, user_text=user_text, segment=segment)
        )

    def prepare(self, *, user_text: str, timer: TurnTimer) -> PreparedReply:
        """Start answering `user_text` speculatively: the model and the first sentence's TTS
        run, nothing plays, nothing is recorded, and tools wait for the commit."""
        release = asyncio.Event()
        output = SpokenOutput(
            speaker=self.speaker, tts=self._providers.tts, timer=timer, release=release
        )
        messages = [*self._memory.context.messages(), ChatMessage.user(user_text)]
        tools = HeldTools(self._tools, release) if self._tools is not None else None
        if self._tools is not None:
            self._tools.begin_turn(timer.turn)
        reply = AgentReply(
            output=output,
            timer=timer,
            llm=self._providers.llm,
            messages=messages,
            tools=tools,
            max_tool_rounds=self._tools.max_rounds if self._tools is not None else 0,
        )
        task = asyncio.ensure_future(reply.run())
        task.add_done_callback(_retrieved)
        return PreparedReply(
            reply=reply, output=output, release=release, messages=messages, task=task
        )

    def adopt(self, prepared: PreparedReply, *, user_text: str) -> None:
        """The turn is committed and the prepared reply answers it: play it now, as a reply."""
        reply = prepared.reply
        segment = prepared.segment
        reply.on_first_output = lambda _at: self._first_output(reply)
        reply.on_chunk = lambda _chunk: self._caption(" ".join(reply.chunks), segment, final=False)
        self._reply = reply
        self._turns.reply_started(reply, at=time.monotonic())
        self._host.set_state(AgentState.THINKING)
        if reply.chunks:
            self._caption(" ".join(reply.chunks), segment, final=False)
        self._task = asyncio.ensure_future(
            self._run(
                reply,
                prepared.output,
                kind=TurnKind.REPLY,
                user_text=user_text,
                segment=segment,
                running=prepared.task,
            )
        )
        prepared.release.set()

    def discard(self, prepared: PreparedReply) -> None:
        """Cancel a prepared reply no turn will use; only its cost is kept (in the usage)."""
        prepared.task.cancel()
        prepared.task.add_done_callback(
            lambda _task: self._count_usage(prepared.reply, prepared.output)
        )

    async def settle(self) -> None:
        """Until the running reply (if any) has ended and recorded itself."""
        if self._task is not None and not self._task.done():
            await asyncio.gather(self._task, return_exceptions=True)

    def interrupt(self) -> None:
        """Stop the agent's sound now and cancel the running reply (a confirmed interruption)."""
        self.speaker.stop()
        # Once: a second cancel would cut the cancelled reply's own recording (its final caption
        # and turn summary), e.g. when a judged interruption's known words are answered at once.
        if self._task is not None and not self._task.cancelling():
            self._task.cancel()
        self._log.info("call.interrupted")
        self._memory.journal.add_event("interrupted")

    async def say_rest(self, reply: AgentReply, *, turn: int) -> None:
        """An interruption held no words: say the part of `reply` the caller did not hear."""
        heard = reply.heard_text()
        full = " ".join(reply.chunks)
        rest = full[len(heard) :].strip() if full.startswith(heard) else full
        metrics.FALSE_INTERRUPTIONS.inc()
        self._log.info("call.resume_after_interruption", rest_chars=len(rest))
        if rest:
            await self.start(fixed_text=rest, kind=TurnKind.REPLY, timer=TurnTimer(turn=turn))

    def _first_output(self, reply: AgentReply) -> None:
        self._host.set_state(AgentState.SPEAKING)
        self._turns.reply_audible(reply, at=time.monotonic())

    async def _run(
        self,
        reply: AgentReply,
        output: SpokenOutput,
        *,
        kind: TurnKind,
        user_text: str,
        segment: str,
        running: asyncio.Future[ReplyOutcome] | None = None,
    ) -> None:
        try:
            await self._say_reply(
                reply, output, kind=kind, user_text=user_text, segment=segment, running=running
            )
        finally:
            self._turns.reply_finished(reply, at=time.monotonic())

    async def _say_reply(
        self,
        reply: AgentReply,
        output: SpokenOutput,
        *,
        kind: TurnKind,
        user_text: str,
        segment: str,
        running: asyncio.Future[ReplyOutcome] | None = None,
    ) -> None:
        started = time.time()
        interrupted = False
        failed: Stage | None = None
        try:
            # A prepared reply is already running; cancelling this task cancels it too.
            heard = (await (running if running is not None else reply.run())).heard
            self._failures = 0
        except asyncio.CancelledError:  # interrupted: the cancellation ends here, the turn is kept
            interrupted = True
            heard = reply.heard_text()
        except ReplyFailedError as e:
            failed = e.stage
            heard = reply.heard_text()
            self._log.warning("reply.failed", stage=failed, error=str(e))
        reply.timer.interrupted = interrupted
        self._count_usage(reply, output)
        self._commit(reply, heard, interrupted=interrupted)
        self._memory.journal.add_turn(
            TranscriptTurn(
                speaker="agent",
                text=heard,
                started_at=started,
                ended_at=time.time(),
                interrupted=interrupted,
                kind=kind,
            )
        )
        record = reply.timer.export()
        if kind is TurnKind.REPLY:
            self._memory.journal.add_metrics(record)
        figures = record.model_dump(exclude={"turn", "interrupted"})
        self._log.info(
            "turn.agent", kind=kind, interrupted=interrupted, heard_chars=len(heard), **figures
        )
        if failed is None and not interrupted and not self._host.ending:
            self._host.set_state(AgentState.LISTENING)
        if heard or self._captions.is_open(segment):  # a segment shown always ends final
            await self._captions.publish(
                text=heard, segment_id=segment, final=True, track_sid=self._track_sid
            )
        if failed is not None:
            heard = f"{heard} {await self._recover(failed)}".strip()
        await self.publish_turn(
            AgentTurnMessage(
                kind=kind,
                user_text=user_text,
                agent_text=heard,
                interrupted=interrupted,
                failed=failed,
                metrics=figures,
            )
        )
        self._end_if_due()

    def _commit(self, reply: AgentReply, heard: str, *, interrupted: bool) -> None:
        """Add what the caller heard to the conversation, after any finished tool rounds."""
        context = self._memory.context
        for message in reply.committed:  # finished tool rounds, with every call's result
            context.add(message)
        said_last = reply.heard_text(last_round_only=True) if reply.committed else heard
        if said_last or interrupted:
            context.add_assistant(said_last)

    def _count_usage(self, reply: AgentReply, output: SpokenOutput) -> None:
        usage = self._memory.usage
        usage.tts_audio_s += output.audio_s
        usage.llm_requests += reply.usage.llm_requests
        usage.llm_prompt_tokens += reply.usage.prompt_tokens
        usage.llm_completion_tokens += reply.usage.completion_tokens

    def _caption(self, text: str, segment: str, *, final: bool) -> None:
        self._captions.post(text=text, segment_id=segment, final=final, track_sid=self._track_sid)

    # Fixed lines and failures

    async def fail_turn(self, stage: Stage, timer: TurnTimer) -> None:
        """A stage failed before any reply could start: recover, and tell the app."""
        line = await self._recover(stage)
        figures = timer.export().model_dump(exclude={"turn", "interrupted"})
        await self.publish_turn(
            AgentTurnMessage(kind=TurnKind.REPLY, agent_text=line, failed=stage, metrics=figures)
        )
        self._end_if_due()

    async def hang_up(self, line: LineName, reason: str) -> None:
        """Say `line` (cutting a running reply short), then end the call with `reason`."""
        if self.busy:
            self.interrupt()
            await self.settle()
        text = await self.say_line(line)
        await self.publish_turn(AgentTurnMessage(kind=TurnKind.GOODBYE, agent_text=text))
        self._host.end(reason)

    async def say_line(self, name: LineName) -> str:
        """Say a pre-synthesised line (works while TTS is down); the text, or "" if unavailable."""
        lines = self._lines
        if name not in lines.audio and not self._lines_ready.done():
            # A failure this early in the call: the lines are still being synthesised.
            await asyncio.wait({self._lines_ready}, timeout=self._opts.provider_timeout_s)
        pcm = lines.audio.get(name)
        text = lines.texts[name]
        self._memory.journal.add_event("line_spoken", line=name, presynthesised=pcm is not None)
        if pcm is None:
            self._log.error("call.line_unavailable", line=name)
            return ""
        started = time.time()
        self._host.set_state(AgentState.SPEAKING)
        self.speaker.begin_reply()
        self.speaker.push_frames(pcm, segment=0)
        await self.speaker.wait_idle()
        kind = TurnKind.FALLBACK if name is LineName.FALLBACK else TurnKind.GOODBYE
        self._memory.journal.add_turn(
            TranscriptTurn(
                speaker="agent", text=text, started_at=started, ended_at=time.time(), kind=kind
            )
        )
        await self._captions.publish(
            text=text, segment_id=new_segment_id(), final=True, track_sid=self._track_sid
        )
        if not self._host.ending:
            self._host.set_state(AgentState.LISTENING)
        return text

    async def _recover(self, stage: Stage) -> str:
        """A stage failed after its retry: say the fallback line, or, after too many failed
        turns in a row, apologise and end the call. The line said."""
        metrics.PROVIDER_FAILURES.labels(stage=stage).inc()
        self._failures += 1
        self._memory.journal.add_event("stage_failed", stage=stage, consecutive=self._failures)
        if self._failures < self._opts.max_consecutive_failures:
            return await self.say_line(LineName.FALLBACK)
        self._end_after_turn = "repeated_failures"  # once the turn is published
        return await self.say_line(LineName.FAILURE_GOODBYE)

    def _end_if_due(self) -> None:
        if self._end_after_turn:
            self._host.end(self._end_after_turn)

    async def publish_turn(self, message: AgentTurnMessage) -> None:
        """Send a turn summary to the app (topic `agent_turns`); a failure to send is no error."""
        with contextlib.suppress(Exception):  # the app misses one summary; the call goes on
            await self._room.publish_data(message.model_dump_json(), topic=TOPIC_AGENT_TURNS)


def _retrieved(task: asyncio.Task[ReplyOutcome]) -> None:
    """Mark a prepared reply's outcome seen: a discarded one's failure is nobody's error."""
    if not task.cancelled():
        task.exception()
