"""The tools of one call: the guarded runtime, spoken and on-screen confirmation, barge-in policy.

`CallTools` is what a reply uses to run the model's committed tool calls. Destructive tools are
confirmed in the app: the agent says what it is about to do and sends a `request_confirm` client
action; no answer in time, or a barge-in while waiting, counts as declined. When the user talks
over a running tool, a tool whose policy is "finish" runs to its end and its result stays in the
conversation; one whose policy is "cancel" is cancelled; calls not yet started never run.

A background tool (`@tool(background=True)`, or an MCP server's `background` list) does not hold
the reply: once its guards (confirmation included) have passed, the model is told it started
(audited "started") and goes on; the run continues beside the conversation, and when it ends its
outcome (audited with the same idempotency key) goes to `on_background_result`, for the session
to bring into the conversation. A call ending first cancels it (audited "cancelled").

Confirmation goes through a `Confirmations`: the app over the data channel on a call, the
terminal in text mode.

Besides the developer's tools, the model may use the client actions the profile allows
(`show_checklist`, `open_url`) as tools, so they pass the same guards and audit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from pydantic import Field

from voice_agent import tracing
from voice_agent.agent import metrics
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.client_messages import MessageRejectedError
from voice_agent.call_record import CallJournal
from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.logging import Logger
from voice_agent.profile import AgentProfile
from voice_agent.settings import Settings
from voice_agent.tooling import (
    BreakerBoard,
    ConfirmationAnswer,
    ConfirmationRequest,
    IdempotencyLedger,
    ToolContext,
    ToolPolicy,
    ToolRegistry,
    ToolReportedError,
    ToolResult,
    ToolRuntime,
    ToolSpec,
    cancelled_content,
    tool,
)
from voice_agent.tooling import messages as tool_messages
from voice_agent.tooling.audit import ToolAuditEntry
from voice_agent.tooling.sources import ToolSources


@dataclass(frozen=True, kw_only=True)
class ToolKit:
    """What every call of a worker shares: the tool registry (and the MCP servers behind it),
    breakers and idempotency ledger."""

    registry: ToolRegistry
    breakers: BreakerBoard
    ledger: IdempotencyLedger
    settings: Settings
    sources: ToolSources | None = None  # closed with the kit

    @classmethod
    async def open(cls, settings: Settings, profile: AgentProfile) -> ToolKit:
        """The profile's tools: Python ones from `VOICE_AGENT_TOOLS_PATH` when it allows any,
        and its MCP servers, started here (close the kit to stop them)."""
        sources = await ToolSources.for_profile(settings, profile)
        return cls(
            registry=sources.registry,
            breakers=BreakerBoard.from_settings(settings),
            ledger=IdempotencyLedger.from_settings(settings),
            settings=settings,
            sources=sources,
        )

    async def aclose(self) -> None:
        """Close the ledger, the breakers' link to the other workers and the MCP servers."""
        try:
            await self.ledger.aclose()
            await self.breakers.aclose()
        finally:
            if self.sources is not None:
                await self.sources.aclose()


class Confirmations(Protocol):
    """Where the user is asked to confirm a destructive tool."""

    @property
    def hint(self) -> str:
        """What the agent adds after the question, saying where to answer."""
        ...

    @property
    def available(self) -> bool:
        """Whether the user can be asked at all (otherwise every confirmation is declined)."""
        ...

    async def ask(self, *, prompt: str, tool: str, timeout_s: float) -> ConfirmationAnswer:
        """The user's answer; "timeout" when none came in time."""
        ...


class AppConfirmations:
    """Confirmation in the app: a `request_confirm` client action answered by `user_confirmed`."""

    hint = "Please confirm on your screen."

    def __init__(self, channel: ClientChannel) -> None:
        self._channel = channel

    @property
    def available(self) -> bool:
        """Whether the profile allows the `request_confirm` client action."""
        return self._channel.policy.allows("request_confirm")

    async def ask(self, *, prompt: str, tool: str, timeout_s: float) -> ConfirmationAnswer:
        """Ask in the app."""
        return await self._channel.request_confirm(prompt=prompt, tool=tool, timeout_s=timeout_s)


@dataclass(frozen=True, kw_only=True)
class BackgroundResult:
    """What became of a background tool call, to bring into the conversation."""

    call: ToolCall
    result: ToolResult

    def messages(self) -> tuple[ChatMessage, ChatMessage]:
        """The outcome as the model reads it: a call of the tool answered by its outcome."""
        call_id = f"{self.call.id}_result"
        content = tool_messages.background_result(self.result.tool, self.result.content)
        asked = ToolCall(id=call_id, name=self.call.name, arguments=self.call.arguments)
        return ChatMessage.assistant("", tool_calls=[asked]), ChatMessage.tool(call_id, content)


class CallTools:
    """Runs one call's tool calls (implements the reply's `ReplyTools`)."""

    def __init__(
        self,
        *,
        kit: ToolKit,
        profile: AgentProfile,
        channel: ClientChannel,
        journal: CallJournal,
        call_id: str,
        user_id: str | None,
        log: Logger,
        confirmations: Confirmations | None = None,
    ) -> None:
        self._channel = channel
        self._log = log
        self._confirmations = confirmations or AppConfirmations(channel)
        self._background: set[asyncio.Task[ToolResult]] = set()
        self.on_background_result: Callable[[BackgroundResult], None] | None = None
        """Hears each background tool's outcome (set by the session)."""
        self._say: Callable[[str], None] | None = None
        self._interrupted = asyncio.Event()
        self._confirm_timeout_s = kit.settings.confirm_timeout_s
        self._journal = journal
        client_specs = _client_action_tools(channel)
        registry = ToolRegistry.from_specs([*kit.registry.specs(), *client_specs])
        allowed = set(profile.tools.allowed) & set(kit.registry.names())
        allowed |= {s.name for s in client_specs}
        policy = ToolPolicy.from_settings(
            kit.settings,
            allowed=allowed,
            max_calls_per_turn=profile.tools.max_calls_per_turn,
            max_calls_per_call=profile.tools.max_calls_per_call,
        )
        self.max_rounds = profile.tools.max_calls_per_turn
        self.runtime = ToolRuntime(
            registry=registry,
            policy=policy,
            breakers=kit.breakers,
            ledger=kit.ledger,
            confirmer=self._confirm,
            audit=self._audit,
            call_id=call_id,
            user_id=user_id,
            app_context=lambda: channel.app_context,
            data_dir=kit.settings.data_dir,
            log=log,
        )

    def _audit(self, entry: ToolAuditEntry) -> None:
        self._journal.add_tool_audit(entry)
        metrics.TOOL_CALLS.labels(  # unknown names stay out of the label set
            tool=entry.tool if self.runtime.allows(entry.tool) else "(not allowed)",
            outcome=entry.outcome,
        ).inc()

    def begin_turn(self, turn: int) -> None:
        """A new agent turn (the per-turn tool call limit starts again)."""
        self.runtime.begin_turn(turn)

    def schemas(self) -> list[dict[str, Any]] | None:
        """The tools the model may see; None when there are none."""
        return self.runtime.tool_schemas() or None

    def skip(self, calls: Sequence[ToolCall], reason: str) -> None:
        """Audit calls that will never run."""
        for call in calls:
            self.runtime.skip(call, reason)

    async def execute(
        self, calls: Sequence[ToolCall], *, say: Callable[[str], None], into: list[ChatMessage]
    ) -> str | None:
        """Run calls in order, appending a tool message per call to `into` (also when
        interrupted); a line to say if the model says nothing after them."""
        self._say = say
        self._interrupted.clear()
        notice: str | None = None
        try:
            for i, call in enumerate(calls):
                try:
                    result = await self._run_one(call, into)
                except asyncio.CancelledError:  # `call` is answered; later ones never start
                    for later in calls[i + 1 :]:
                        skipped = self.runtime.skip(later, "the user interrupted before it started")
                        into.append(ChatMessage.tool(later.id, skipped.content))
                    raise
                into.append(ChatMessage.tool(call.id, result.content))
                if result.outcome == "breaker_open":
                    notice = _unavailable_line(self.runtime.spec_for(call.name))
        finally:
            self._say = None
        return notice

    @property
    def background_running(self) -> int:
        """Background tool runs not yet ended."""
        return len(self._background)

    async def wait_background(self) -> None:
        """Until the background runs going now have ended (and been handed on)."""
        if self._background:
            await asyncio.wait([*self._background])

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """The call is ending: cancel background runs and wait (bounded) until each has
        recorded its cancellation (or the outcome it reached first)."""
        running = list(self._background)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running, timeout=timeout_s)

    async def _run_one(self, call: ToolCall, into: list[ChatMessage]) -> ToolResult:
        """Run one call; when the user talks over it, its tool message goes to `into` before
        the cancellation propagates."""
        with tracing.span(f"tool {call.name}", tool=call.name) as span:
            spec = self.runtime.spec_for(call.name)
            if spec is not None and spec.background:
                result = await self._start_background(call, into)
                span.set_attribute("outcome", result.outcome)
                return result
            task = asyncio.ensure_future(self.runtime.run(call))
            try:
                result = await asyncio.shield(task)
            except asyncio.CancelledError:
                self._interrupted.set()  # a confirmation still pending is declined at once
                into.append(ChatMessage.tool(call.id, await self._settle_interrupted(call, task)))
                raise
            span.set_attribute("outcome", result.outcome)
            return result

    async def _start_background(self, call: ToolCall, into: list[ChatMessage]) -> ToolResult:
        """Run a background call until it has started (its "started" result) or has ended in
        its guards; from then on it runs beside the conversation."""
        started: asyncio.Future[ToolResult] = asyncio.get_running_loop().create_future()

        def on_started(result: ToolResult) -> None:
            if not started.done():
                started.set_result(result)

        task = asyncio.ensure_future(self.runtime.run(call, started=on_started))
        try:
            await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # a barge-in before it started (while confirming)
            self._interrupted.set()
            if started.done():
                self._keep(call, task)
                into.append(ChatMessage.tool(call.id, started.result().content))
            else:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                into.append(ChatMessage.tool(call.id, cancelled_content(call.name)))
            raise
        if not started.done():  # refused, declined, a duplicate...: nothing runs on
            return task.result()
        self._keep(call, task)
        return started.result()

    def _keep(self, call: ToolCall, task: asyncio.Task[ToolResult]) -> None:
        self._background.add(task)

        def ended(done: asyncio.Task[ToolResult]) -> None:
            self._background.discard(done)
            if done.cancelled() or done.exception() is not None:
                return  # cancelled as the call ends: audited by the runtime
            if self.on_background_result is not None:
                self.on_background_result(BackgroundResult(call=call, result=done.result()))

        task.add_done_callback(ended)

    async def _settle_interrupted(self, call: ToolCall, task: asyncio.Future[ToolResult]) -> str:
        """The tool message of a call the user talked over: the result of a tool that finishes
        per its policy (or had already finished), else a cancellation."""
        spec = self.runtime.spec_for(call.name)
        if not task.done() and spec is not None and spec.on_interrupt == "finish":
            self._log.info("tool.finishing_after_interruption", tool=call.name)
            try:
                return (await task).content
            except asyncio.CancelledError:  # cancelled again (the call is ending): give up
                task.cancel()
                return cancelled_content(call.name)
        if task.done() and not task.cancelled():
            return task.result().content
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return cancelled_content(call.name)

    async def _confirm(self, request: ConfirmationRequest) -> ConfirmationAnswer:
        """Say what is about to happen and ask the user; a barge-in counts as no."""
        if not self._confirmations.available:
            self._log.warning("tool.confirm_unavailable", tool=request.tool)
            return "declined"
        if self._say is not None:
            self._say(f"{request.prompt} {self._confirmations.hint}")
        waiter = asyncio.ensure_future(
            self._confirmations.ask(
                prompt=request.prompt,
                tool=request.tool,
                timeout_s=self._confirm_timeout_s,
            )
        )
        interrupted = asyncio.ensure_future(self._interrupted.wait())
        try:
            await asyncio.wait({waiter, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            interrupted.cancel()
            if not waiter.done():
                waiter.cancel()
        if waiter.done() and not waiter.cancelled():
            return waiter.result()
        return "declined"


def _unavailable_line(spec: ToolSpec | None) -> str:
    line = "I'm sorry, that system is unavailable right now."
    if spec is not None and spec.fallback:
        return f"{line} {spec.fallback}"
    return f"{line} Please try again later."


def _client_action_tools(channel: ClientChannel) -> list[ToolSpec]:
    """The client actions the profile allows, as tools the model can call."""
    specs: list[ToolSpec] = []
    policy = channel.policy

    if policy.allows("show_checklist"):

        @tool(name="show_checklist", timeout=5.0)
        async def show_checklist(
            ctx: ToolContext,
            *,
            title: Annotated[str, Field(min_length=1, max_length=120)],
            items: Annotated[list[str], Field(min_length=1, max_length=20)],
        ) -> dict[str, Any]:
            """Show the caller a checklist of steps on their screen.

            Args:
                title: A short heading for the checklist.
                items: The steps, one short sentence each.
            """
            return await _send(channel, "show_checklist", {"title": title, "items": items})

        specs.append(show_checklist)

    if policy.allows("open_url") and policy.url_hosts:

        @tool(name="open_url", timeout=5.0)
        async def open_url(
            ctx: ToolContext,
            *,
            url: Annotated[str, Field(min_length=8, max_length=2048)],
            label: Annotated[str | None, Field(max_length=120)] = None,
        ) -> dict[str, Any]:
            """Open a help page for the caller in their app (https links on approved sites).

            Args:
                url: The https link to open.
                label: What the link is, in a few words.
            """
            payload: dict[str, Any] = {"url": url}
            if label:
                payload["label"] = label
            return await _send(channel, "open_url", payload)

        specs.append(open_url)
    return specs


async def _send(channel: ClientChannel, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        action_id = await channel.send(action, payload)
    except MessageRejectedError as e:
        raise ToolReportedError(str(e)) from None
    return {"shown": True, "action_id": action_id}
