"""Tool calls inside an agent reply: commit, confirmation over the data channel, barge-in, limits.

The reply runs with a scripted fake model and TTS, the real guarded `ToolRuntime` (ledger on disk,
breakers), a real `ClientChannel` whose published messages a fake app answers, and a real speaker.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_settings
from voice_agent.agent.call_tools import CallTools, ToolKit
from voice_agent.agent.client_channel import ClientChannel
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.reply import AgentReply
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.agent.spoken import SpokenOutput
from voice_agent.call_record import CallJournal
from voice_agent.chat import ChatMessage, ToolCall
from voice_agent.logging import get_logger
from voice_agent.metrics import WORKER_REGISTRY
from voice_agent.profile import AgentProfile, ClientActionPolicy, ToolAllowance
from voice_agent.providers.base import LLM, LLMCapabilities, LLMDelta
from voice_agent.providers.fake import FakeCompletion, FakeLLM, FakeTimeline, FakeTTS
from voice_agent.providers.retry import RetryingLLM, RetryingTTS
from voice_agent.tooling import (
    BreakerBoard,
    IdempotencyLedger,
    ToolContext,
    ToolRegistry,
    ToolSpec,
    tool,
)


@dataclass
class Ran:
    """What the test tools did."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: list[str] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


def make_tools(ran: Ran) -> list[ToolSpec]:
    @tool
    async def get_incident_status(ctx: ToolContext, *, incident_id: str) -> dict[str, Any]:
        """Look up an incident."""
        ran.calls.append(("get_incident_status", {"incident_id": incident_id}))
        return {"incident_id": incident_id, "status": "investigating"}

    @tool(destructive=True, confirm="Create a ticket titled '{title}'?")
    async def create_ticket(ctx: ToolContext, *, title: str) -> dict[str, Any]:
        """Create a support ticket."""
        ran.calls.append(("create_ticket", {"title": title, "key": ctx.idempotency_key}))
        return {"ticket_id": "TCK-1"}

    @tool(on_interrupt="finish", timeout=5)
    async def slow_lookup(ctx: ToolContext, *, query: str) -> dict[str, Any]:
        """A lookup that takes a while and finishes even when the user talks over it."""
        ran.started.set()
        await ran.release.wait()
        ran.calls.append(("slow_lookup", {"query": query}))
        return {"answer": 42}

    @tool(on_interrupt="cancel", timeout=5)
    async def slow_search(ctx: ToolContext, *, query: str) -> dict[str, Any]:
        """A search that is abandoned when the user talks over it."""
        ran.started.set()
        try:
            await ran.release.wait()
        except asyncio.CancelledError:
            ran.cancelled.append("slow_search")
            raise
        return {"hits": []}

    @tool(fallback="You can email support@example.com instead.")
    async def billing_lookup(ctx: ToolContext, *, account: str) -> dict[str, Any]:
        """Look up a billing account (its system is down in these tests)."""
        ran.calls.append(("billing_lookup", {"account": account}))
        raise ConnectionError("billing backend unreachable")

    return [
        get_incident_status,
        create_ticket,
        slow_lookup,
        slow_search,
        billing_lookup,
    ]


class App:
    """A fake app on the other end of the data channel; answers confirmations as told."""

    def __init__(self, answer: bool | None) -> None:
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.channel: ClientChannel | None = None

    async def publish(self, text: str) -> None:
        message = json.loads(text)
        self.received.append(message)
        if message["action"] == "request_confirm" and self.answer is not None:
            assert self.channel is not None
            reply = {"type": "user_confirmed", "v": 1, "id": message["id"], "ok": self.answer}
            asyncio.get_running_loop().call_soon(self.channel.receive, json.dumps(reply).encode())


@dataclass
class Rig:
    """One call's tools, channel, journal and speaker."""

    tools: CallTools
    app: App
    journal: CallJournal
    speaker: AgentSpeaker
    ran: Ran

    def reply(self, llm: LLM, tts: FakeTTS | None = None) -> AgentReply:
        self.tools.begin_turn(1)
        timer = TurnTimer(turn=1)
        # Retried and timed as the worker's providers are (`build_providers`).
        retried = RetryingTTS(tts or FakeTTS(), silence_timeout_s=5.0)
        return AgentReply(
            output=SpokenOutput(speaker=self.speaker, tts=retried, timer=timer),
            llm=RetryingLLM(llm, silence_timeout_s=5.0),
            timer=timer,
            messages=[ChatMessage.user("Help me please.")],
            tools=self.tools,
            max_tool_rounds=self.tools.max_rounds,
        )

    def outcomes(self) -> list[tuple[str, str]]:
        return [(a.tool, a.outcome) for a in self.journal.record.tool_audit]


@pytest.fixture
async def speaker() -> AsyncIterator[AgentSpeaker]:
    speaker, _track = AgentSpeaker.create()
    speaker.start()
    yield speaker
    await speaker.aclose()


@pytest.fixture
def make_rig(tmp_path: Path, speaker: AgentSpeaker) -> Callable[..., Rig]:
    def build(
        *,
        answer: bool | None = True,
        max_calls_per_turn: int = 4,
        confirm_timeout_s: float = 5.0,
        client_actions: tuple[str, ...] = ("request_confirm",),
        breaker_failures: int = 3,
    ) -> Rig:
        ran = Ran()
        specs = make_tools(ran)
        settings = make_settings(
            data_dir=tmp_path,
            confirm_timeout_s=confirm_timeout_s,
            tool_breaker_failures=breaker_failures,
        )
        kit = ToolKit(
            registry=ToolRegistry.from_specs(specs),
            breakers=BreakerBoard.from_settings(settings),
            ledger=IdempotencyLedger.in_data_dir(tmp_path),
            settings=settings,
        )
        profile = AgentProfile(
            instructions="Help.",
            greeting="Hi.",
            tools=ToolAllowance(
                allowed=tuple(s.name for s in specs), max_calls_per_turn=max_calls_per_turn
            ),
            client_actions=ClientActionPolicy(allowed=client_actions),
        )
        journal = CallJournal(directory=tmp_path / "calls", call_id="c1", room="r", user_id="u")
        app = App(answer)
        channel = ClientChannel(
            policy=profile.client_actions, journal=journal, log=get_logger("t"), publish=app.publish
        )
        app.channel = channel
        tools = CallTools(
            kit=kit,
            profile=profile,
            channel=channel,
            journal=journal,
            call_id="c1",
            user_id="u",
            log=get_logger("t"),
        )
        return Rig(tools=tools, app=app, journal=journal, speaker=speaker, ran=ran)

    return build


def call(name: str, call_id: str = "call_1", **arguments: Any) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments))


async def test_committed_tool_call_runs_and_the_model_answers_from_its_result(
    make_rig: Callable[..., Rig],
) -> None:
    """Round one calls a tool; its result goes back to the model, which then speaks."""
    rig = make_rig()
    llm = FakeLLM(
        [
            FakeCompletion(
                text="Let me check.", tool_calls=[call("get_incident_status", incident_id="INC-7")]
            ),
            FakeCompletion(text="Incident seven is being investigated."),
        ]
    )
    tts = FakeTTS()
    reply = rig.reply(llm, tts)
    await reply.run()
    assert rig.ran.calls == [("get_incident_status", {"incident_id": "INC-7"})]
    second = llm.calls[1].messages
    assert second[-2].tool_calls[0].name == "get_incident_status"
    assert json.loads(second[-1].content or "")["result"]["status"] == "investigating"
    assert llm.calls[0].tools is not None
    assert [t.text for t in tts.calls] == ["Let me check.", "Incident seven is being investigated."]
    assert [m.role.value for m in reply.committed] == ["assistant", "tool"]
    assert reply.heard_text(last_round_only=True) == "Incident seven is being investigated."
    assert rig.outcomes() == [("get_incident_status", "ok")]
    assert reply.timer.tool_seconds is not None


async def test_destructive_tool_runs_once_after_the_user_confirms(
    make_rig: Callable[..., Rig],
) -> None:
    """The agent says what it will do, asks in the app, and runs the tool on "ok"."""
    rig = make_rig(answer=True)
    llm = FakeLLM(
        [
            FakeCompletion(tool_calls=[call("create_ticket", title="VPN down")]),
            FakeCompletion(text="Your ticket is TCK-1."),
        ]
    )
    tts = FakeTTS()
    await rig.reply(llm, tts).run()
    confirm = rig.app.received[0]
    assert confirm["action"] == "request_confirm"
    assert confirm["payload"]["prompt"] == "Create a ticket titled 'VPN down'?"
    assert "Create a ticket titled 'VPN down'? Please confirm on your screen." in [
        t.text for t in tts.calls
    ]
    assert [c[0] for c in rig.ran.calls] == ["create_ticket"]
    audit = rig.journal.record.tool_audit[0]
    assert (audit.outcome, audit.confirmation) == ("ok", "confirmed")


@pytest.mark.parametrize(
    ("answer", "confirmation", "timeout_s"),
    # A "no" gets all the time it needs (a loaded machine must not turn it into a timeout).
    [(False, "declined", 10.0), (None, "timeout", 0.3)],
)
async def test_declined_or_unanswered_confirmation_never_runs_the_tool(
    make_rig: Callable[..., Rig], answer: bool | None, confirmation: str, timeout_s: float
) -> None:
    """ "No", or no answer in time, leaves the tool unrun; the model is told."""
    rig = make_rig(answer=answer, confirm_timeout_s=timeout_s)
    llm = FakeLLM(
        [
            FakeCompletion(tool_calls=[call("create_ticket", title="VPN down")]),
            FakeCompletion(text="Okay, I won't create it."),
        ]
    )
    await rig.reply(llm).run()
    assert rig.ran.calls == []
    audit = rig.journal.record.tool_audit[0]
    assert (audit.outcome, audit.confirmation) == ("declined", confirmation)
    told = llm.calls[1].messages[-1].content or ""
    assert "was not carried out" in told


class _HangsAfterToolCall(LLM):
    """Streams a tool call, then never finishes the completion (as a slow model might)."""

    capabilities = LLMCapabilities(tool_calls=True)

    def __init__(self) -> None:
        self.sent_call = asyncio.Event()

    async def stream(
        self, messages: Sequence[ChatMessage], *, tools: list[dict[str, Any]] | None = None
    ) -> AsyncGenerator[LLMDelta, None]:
        yield LLMDelta(text="I'll create that ticket.")
        yield LLMDelta(tool_calls=(call("create_ticket", title="never"),))
        self.sent_call.set()
        await asyncio.Event().wait()


async def test_tool_call_of_an_interrupted_generation_never_runs(
    make_rig: Callable[..., Rig],
) -> None:
    """A barge-in before the completion finished: its tool call is audited skipped, not run."""
    rig = make_rig(answer=True)
    llm = _HangsAfterToolCall()
    reply = rig.reply(llm)
    task = asyncio.create_task(reply.run())
    await asyncio.wait_for(llm.sent_call.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.ran.calls == []
    assert rig.app.received == []  # not even a confirmation was asked
    assert rig.outcomes() == [("create_ticket", "skipped")]
    assert reply.committed == []


async def test_running_finish_tool_completes_and_its_result_is_kept(
    make_rig: Callable[..., Rig],
) -> None:
    """A barge-in during a "finish" tool: the tool ends, its result joins the conversation."""
    rig = make_rig()
    llm = FakeLLM([FakeCompletion(tool_calls=[call("slow_lookup", query="q")])])
    reply = rig.reply(llm)
    task = asyncio.create_task(reply.run())
    await asyncio.wait_for(rig.ran.started.wait(), 5)
    task.cancel()
    await asyncio.sleep(0)
    rig.ran.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.ran.calls == [("slow_lookup", {"query": "q"})]
    assert [m.role.value for m in reply.committed] == ["assistant", "tool"]
    assert json.loads(reply.committed[1].content or "")["result"] == {"answer": 42}
    assert rig.outcomes() == [("slow_lookup", "ok")]
    assert len(llm.calls) == 1  # the model is not asked again for an interrupted reply


async def test_running_cancel_tool_is_cancelled_and_recorded(
    make_rig: Callable[..., Rig],
) -> None:
    """A barge-in during a "cancel" tool: the tool sees the cancellation; the context says so."""
    rig = make_rig()
    llm = FakeLLM(
        [
            FakeCompletion(
                tool_calls=[
                    call("slow_search", "a", query="q"),
                    call("get_incident_status", "b", incident_id="INC-1"),
                ]
            )
        ]
    )
    reply = rig.reply(llm)
    task = asyncio.create_task(reply.run())
    await asyncio.wait_for(rig.ran.started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rig.ran.cancelled == ["slow_search"]
    assert rig.ran.calls == []  # the second call never started
    assert [m.tool_call_id for m in reply.committed[1:]] == ["a", "b"]
    assert rig.outcomes() == [("slow_search", "cancelled"), ("get_incident_status", "skipped")]


async def test_a_loop_of_tool_calls_hits_the_per_turn_limit(
    make_rig: Callable[..., Rig],
) -> None:
    """A model that keeps calling tools is stopped: the limit is refused, then tools go away."""
    rig = make_rig(max_calls_per_turn=2)
    looping = FakeCompletion(tool_calls=[call("get_incident_status", incident_id="INC-1")])
    llm = FakeLLM(
        [looping, looping, FakeCompletion(text="Sorry, I could not find more.")],
        default=looping,
    )
    await rig.reply(llm).run()
    assert len(rig.ran.calls) == 1  # the second is the same request: reused, not re-run
    assert [o for _, o in rig.outcomes()] == ["ok", "duplicate"]
    assert llm.calls[2].tools is None  # after two rounds the model must answer in words
    assert len(llm.calls) == 3


async def test_calls_beyond_the_per_turn_limit_are_refused(
    make_rig: Callable[..., Rig],
) -> None:
    """Three calls in one round with a limit of two: the third is refused as over the limit."""
    rig = make_rig(max_calls_per_turn=2)
    calls = [call("get_incident_status", f"c{i}", incident_id=f"INC-{i}") for i in range(3)]
    llm = FakeLLM([FakeCompletion(tool_calls=calls), FakeCompletion(text="Done.")])
    await rig.reply(llm).run()
    assert [o for _, o in rig.outcomes()] == ["ok", "ok", "limit"]
    assert len(rig.ran.calls) == 2


async def test_open_breaker_makes_the_agent_offer_the_manual_fallback(
    make_rig: Callable[..., Rig],
) -> None:
    """After the breaker opens, the tool is not run and the agent itself offers the fallback."""
    rig = make_rig(breaker_failures=1)
    failing = FakeCompletion(tool_calls=[call("billing_lookup", account="A-1")])
    silent = FakeCompletion(text="")
    llm = FakeLLM([failing, FakeCompletion(text="That failed."), failing, silent])
    await rig.reply(llm).run()
    tts = FakeTTS()
    rig.tools.begin_turn(2)
    await rig.reply(llm, tts).run()
    assert [o for _, o in rig.outcomes()] == ["error", "breaker_open"]
    assert len(rig.ran.calls) == 1
    spoken = " ".join(t.text for t in tts.calls)
    assert "unavailable" in spoken
    assert "support@example.com" in spoken


async def test_words_before_a_blocked_tool_do_not_stand_in_for_the_fallback(
    make_rig: Callable[..., Rig],
) -> None:
    """ "Let me check" said before the call is not an answer: if the model is silent after the
    breaker refused the tool, the agent still offers the fallback."""
    rig = make_rig(breaker_failures=1)
    failing = FakeCompletion(tool_calls=[call("billing_lookup", account="A-1")])
    checking = FakeCompletion(
        text="Let me check your account.",
        tool_calls=[call("billing_lookup", account="A-1")],
    )
    llm = FakeLLM([failing, FakeCompletion(text="That failed."), checking, FakeCompletion(text="")])
    await rig.reply(llm).run()
    tts = FakeTTS()
    rig.tools.begin_turn(2)
    await rig.reply(llm, tts).run()
    assert [o for _, o in rig.outcomes()] == ["error", "breaker_open"]
    spoken = [t.text for t in tts.calls]
    assert spoken[0] == "Let me check your account."
    assert "support@example.com" in " ".join(spoken[1:])


async def test_client_action_tool_passes_policy_and_is_sent(
    make_rig: Callable[..., Rig],
) -> None:
    """show_checklist is offered when the profile allows it, and reaches the app."""
    rig = make_rig(client_actions=("show_checklist",))
    checklist = call("show_checklist", title="Reset VPN", items=["Quit the app", "Sign in"])
    llm = FakeLLM([FakeCompletion(tool_calls=[checklist]), FakeCompletion(text="On screen.")])
    await rig.reply(llm).run()
    names = [t["function"]["name"] for t in llm.calls[0].tools or []]
    assert "show_checklist" in names
    assert "open_url" not in names
    assert rig.app.received[0]["payload"] == {
        "title": "Reset VPN",
        "items": ["Quit the app", "Sign in"],
    }
    assert rig.outcomes() == [("show_checklist", "ok")]


async def test_model_never_sees_tools_outside_the_profile(
    make_rig: Callable[..., Rig], tmp_path: Path
) -> None:
    """A tool call naming a registered but not allowed tool is refused, and it is not offered."""
    rig = make_rig()
    labels = {"tool": "(not allowed)", "outcome": "refused"}
    before = WORKER_REGISTRY.get_sample_value("voice_agent_tool_calls_total", labels) or 0.0
    offered = {t["function"]["name"] for t in rig.tools.schemas() or []}
    assert "show_checklist" not in offered  # client action not allowed in this profile
    llm = FakeLLM(
        [
            FakeCompletion(tool_calls=[call("show_checklist", title="x", items=["y"])]),
            FakeCompletion(text="Sorry."),
        ]
    )
    await rig.reply(llm).run()
    assert rig.outcomes() == [("show_checklist", "refused")]
    assert rig.app.received == []
    assert WORKER_REGISTRY.get_sample_value("voice_agent_tool_calls_total", labels) == before + 1


async def test_slow_model_timeline_still_commits_tool_calls(make_rig: Callable[..., Rig]) -> None:
    """A tool call after slowly streamed text is committed once the stream finishes."""
    rig = make_rig()
    slow = FakeTimeline(chunk_delay_s=0.02)
    llm = FakeLLM(
        [
            FakeCompletion(
                text="One moment while I look.",
                tool_calls=[call("get_incident_status", incident_id="INC-2")],
                timeline=slow,
            ),
            FakeCompletion(text="Found it."),
        ]
    )
    await rig.reply(llm).run()
    assert rig.outcomes() == [("get_incident_status", "ok")]
