"""A call without audio: the agent profile answering typed words, in the same runtime.

`TextSession` composes the parts of a call that need no room: the reply runner (`AgentReply`)
behind a `TextOutput` (the `ReplyOutput` seam: each chunk is delivered at once and read whole),
the call's guarded tools (`CallTools`: limits, allowlist, validation, breakers, idempotency
ledger, confirmation, audit), the model's conversation, the journal and the call record, which
goes to a sink when the session closes. Confirmations go to the `Confirmations` it is given (the
terminal in `voice-agent chat`, scripted answers in conversation tests); client actions the
profile allows (`show_checklist`, `open_url`) go to `on_action`. A background tool's outcome is
told as soon as no reply is running, in a reply of its own (`on_reply` hears it).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voice_agent.agent.call_tools import BackgroundResult, CallTools, Confirmations, ToolKit
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.options import SessionOptions
from voice_agent.agent.reply import AgentReply, ReplyFailedError
from voice_agent.call_record import (
    CallJournal,
    CallRecord,
    CallRecordSink,
    CallUsage,
    TranscriptTurn,
)
from voice_agent.logging import Logger, get_logger
from voice_agent.pipeline.context import ConversationContext
from voice_agent.profile import AgentProfile
from voice_agent.protocol import TurnKind
from voice_agent.providers.base import LLM
from voice_agent.tooling.audit import ToolAuditEntry


class TextOutput:
    """A `ReplyOutput` for text: every chunk is delivered as it comes, and read whole."""

    def __init__(self, on_chunk: Callable[[str], None] | None = None) -> None:
        self._on_chunk = on_chunk
        self._said: set[int] = set()

    def begin(self, on_first_output: Callable[[float], None]) -> None:
        """A new reply: its first chunk is its first output."""
        self._said.clear()
        self._first = on_first_output

    async def say(self, text: str, index: int) -> None:
        """Deliver chunk `index`."""
        if not self._said:
            self._first(time.monotonic())
        self._said.add(index)
        if self._on_chunk is not None:
            self._on_chunk(text)

    def heard(self, index: int) -> float:
        """1 for a delivered chunk, 0 otherwise."""
        return 1.0 if index in self._said else 0.0

    async def finish(self) -> None:
        """Nothing is queued: delivered is done."""


@dataclass(frozen=True, kw_only=True)
class TextReply:
    """One answer of the agent, with the tool requests it made."""

    text: str
    tool_audit: list[ToolAuditEntry] = field(default_factory=list)
    failed: bool = False
    background: bool = False
    """An answer nobody asked for: the outcome of a background tool."""


class TextSession:
    """One text-only call (see the module docstring); `close` hands its record to the sink."""

    def __init__(
        self,
        *,
        options: SessionOptions,
        profile: AgentProfile,
        llm: LLM,
        kit: ToolKit | None,
        sink: CallRecordSink,
        journal_dir: Path,
        confirmations: Confirmations,
        call_id: str | None = None,
        user_id: str | None = None,
        on_action: Callable[[dict[str, Any]], None] | None = None,
        on_reply: Callable[[TextReply], None] | None = None,
        log: Logger | None = None,
    ) -> None:
        self.call_id = call_id or secrets.token_hex(8)
        self.log = (log or get_logger("agent.text_session")).bind(call_id=self.call_id)
        self._opts = options
        self._llm = llm
        self._sink = sink
        self._on_reply = on_reply
        self.journal = CallJournal(
            directory=journal_dir,
            call_id=self.call_id,
            room=f"text-{self.call_id}",
            user_id=user_id,
        )
        self.journal.add_event("text_session")
        self.context = ConversationContext(
            system_prompt=options.instructions, max_tokens=options.context_token_budget
        )
        self.usage = CallUsage()
        self._started = time.monotonic()
        self._turn = 0
        self._lock = asyncio.Lock()
        self._pending: list[BackgroundResult] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.ended: str | None = None
        """Why the session ended on its own (a time limit), if it did."""

        async def publish(message: str) -> None:
            if on_action is not None:
                on_action(json.loads(message))

        channel = ClientChannel(
            policy=profile.client_actions, journal=self.journal, log=self.log, publish=publish
        )
        channel.user_identity = user_id
        self.tools: CallTools | None = None
        if kit is not None:
            self.tools = CallTools(
                kit=kit,
                profile=profile,
                channel=channel,
                journal=self.journal,
                call_id=self.call_id,
                user_id=user_id,
                log=self.log,
                confirmations=confirmations,
            )
            self.tools.on_background_result = self._background_ended

    @property
    def greeting(self) -> str:
        """The profile's greeting (journaled as the agent's first turn by `greet`)."""
        return self._opts.greeting

    def greet(self) -> str:
        """Record the greeting as said; its text."""
        now = time.time()
        self.journal.add_turn(
            TranscriptTurn(
                speaker="agent",
                text=self._opts.greeting,
                started_at=now,
                ended_at=now,
                kind=TurnKind.GREETING,
            )
        )
        return self._opts.greeting

    async def send(self, text: str) -> TextReply:
        """The agent's answer to `text` (after any reply still running)."""
        async with self._lock:
            now = time.time()
            self.journal.add_turn(
                TranscriptTurn(speaker="user", text=text, started_at=now, ended_at=now, typed=True)
            )
            self.log.info("turn.user", text_chars=len(text), typed=True)
            if time.monotonic() - self._started >= self._opts.max_call_s:
                return self._goodbye()
            self._turn += 1
            self.context.add_user(text)
            return await self._reply()

    async def wait_background(self) -> None:
        """Until every background tool has ended and its outcome has been told."""
        while True:
            if self.tools is not None and self.tools.background_running:
                await self.tools.wait_background()
                continue
            if not self._tasks:
                return
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self, reason: str = "user_left") -> CallRecord:
        """End the session (background tools still running are cancelled, and recorded so);
        the record, handed to the sink."""
        if self.tools is not None:
            await self.tools.aclose()
        for task in [*self._tasks]:
            task.cancel()
        if self._tasks:
            await asyncio.wait([*self._tasks], timeout=2.0)
        self.journal.set_usage(self.usage)
        record = self.journal.finish(self.ended or reason)
        self.log.info("call.ended", reason=record.end_reason, turns=len(record.transcript))
        await self._sink.submit(record)
        return record

    # Replies

    async def _reply(self, *, background: bool = False) -> TextReply:
        """Run one model reply on the conversation (the lock is held)."""
        self._bring_in_background()
        audited = len(self.journal.record.tool_audit)
        timer = TurnTimer(turn=self._turn)
        if self.tools is not None:
            self.tools.begin_turn(self._turn)
        reply = AgentReply(
            output=TextOutput(),
            timer=timer,
            llm=self._llm,
            messages=self.context.messages(),
            tools=self.tools,
            max_tool_rounds=self.tools.max_rounds if self.tools is not None else 0,
        )
        started = time.time()
        failed = False
        try:
            text = (await reply.run()).text
        except ReplyFailedError as e:
            failed = True
            self.log.warning("reply.failed", stage=e.stage, error=str(e))
            self.journal.add_event("stage_failed", stage=e.stage, consecutive=1)
            text = reply.heard_text()
        for message in reply.committed:
            self.context.add(message)
        said_last = reply.heard_text(last_round_only=True) if reply.committed else text
        if said_last:
            self.context.add_assistant(said_last)
        if failed:
            text = f"{text} {self._opts.fallback_line}".strip()
        self.usage.llm_requests += reply.usage.llm_requests
        self.usage.llm_prompt_tokens += reply.usage.prompt_tokens
        self.usage.llm_completion_tokens += reply.usage.completion_tokens
        self.journal.add_turn(
            TranscriptTurn(speaker="agent", text=text, started_at=started, ended_at=time.time())
        )
        self.journal.add_metrics(timer.export())
        self.log.info("turn.agent", kind=TurnKind.REPLY, chars=len(text), background=background)
        return TextReply(
            text=text,
            tool_audit=self.journal.record.tool_audit[audited:],
            failed=failed,
            background=background,
        )

    def _goodbye(self) -> TextReply:
        self.ended = "max_duration"
        now = time.time()
        text = self._opts.goodbye_line
        self.journal.add_turn(
            TranscriptTurn(
                speaker="agent", text=text, started_at=now, ended_at=now, kind=TurnKind.GOODBYE
            )
        )
        return TextReply(text=text)

    # Background tools

    def _background_ended(self, result: BackgroundResult) -> None:
        """A background tool ended: tell its outcome once no reply is running."""
        self._pending.append(result)
        self._spawn(self._tell_background())

    def _bring_in_background(self) -> None:
        """Outcomes of background tools join the conversation before the next reply."""
        pending, self._pending = self._pending, []
        for result in pending:
            for message in result.messages():
                self.context.add(message)

    async def _tell_background(self) -> None:
        async with self._lock:
            if not self._pending or self.ended:  # a reply since then has told it already
                return
            reply = await self._reply(background=True)
        if self._on_reply is not None:
            self._on_reply(reply)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
