"""Tools end to end: a real call through LiveKit in which the model calls the example tools.

The caller confirms (or declines) a destructive tool over the data channel, as the web app would;
the ticket store on disk shows whether the ticket exists, and how many times.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration.stack import VoiceStack, speech, voice_stack
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI
from voice_agent.tooling.tickets import TicketStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "deploy" / "profiles" / "support.toml"
QUESTION = "Please open a ticket, my VPN is down."
TICKET_ARGS = json.dumps(
    {
        "title": "VPN down",
        "description": "The VPN fails to connect since this morning.",
        "priority": "high",
    }
)


def _models(*, model_repeats_the_call: bool = False) -> ScriptedOpenAI:
    ticket = ScriptedToolCall(name="create_ticket", arguments=TICKET_ARGS)
    repeat = [ChatReply(tool_calls=[ticket])] if model_repeats_the_call else []
    return ScriptedOpenAI(
        chat=[
            ChatReply(text="I'll open a ticket for that.", tool_calls=[ticket]),
            *repeat,
            ChatReply(text="Your ticket is open; the team will email you."),
        ],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )


async def _wait_idle(worker: object, timeout_s: float = 15) -> None:
    async with asyncio.timeout(timeout_s):
        while worker.active_jobs:  # type: ignore[attr-defined]  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.05)


async def _call(
    livekit: LiveKitEndpoint, tmp: Path, models: ScriptedOpenAI, *, confirm: bool
) -> tuple[dict[str, Any], VoiceStack]:
    """One call on the support profile with the example tools; the caller answers `confirm`."""
    async with (
        models,
        voice_stack(
            livekit, tmp, models=models, profile=PROFILE, tools_path=ROOT / "tools",
            stt_language="en",
        ) as stack,
    ):  # fmt: skip
        result = await stack.call(await speech(QUESTION), confirm=confirm)
        await _wait_idle(stack.worker)
    return result, stack


async def test_caller_confirms_destructive_tool_and_the_ticket_exists_once(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The agent asks in the app, the caller confirms, one ticket is created and audited; the
    model repeating the call gets the same ticket back without a second one or a second ask."""
    models = _models(model_repeats_the_call=True)
    result, stack = await _call(livekit_server, tmp_path, models, confirm=True)
    assert result["ok"], result
    [confirm] = [a for a in result["client_actions"] if a["action"] == "request_confirm"]
    assert confirm["payload"]["prompt"] == (
        "Open a high priority support ticket titled 'VPN down'?"
    )
    tickets = TicketStore.in_data_dir(tmp_path).tickets()
    assert [t.title for t in tickets] == ["VPN down"]
    # The model was shown only the profile's tools, and got the ticket back.
    # A speculation at the caller's comma pause may have asked the same first question once
    # more (the scripted model answers it alike): the rounds are the distinct requests.
    requests = models.requests_to("/v1/chat/completions")
    first, second, third = [
        r for i, r in enumerate(requests) if r.json not in (q.json for q in requests[:i])
    ]
    offered = {t["function"]["name"] for t in first.json["tools"]}
    assert offered == {
        "get_incident_status",
        "list_open_incidents",
        "search_runbooks",
        "create_ticket",
        "escalate_to_human",
        "accounts__get_account_status",  # from the profile's MCP server
        "accounts__unlock_account",
        "open_url",
        "show_checklist",
    }
    tool_message = second.json["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"])["result"]["ticket_id"] == tickets[0].ticket_id
    [turn] = result["turns"]
    assert "Please confirm on your screen." in turn["agent_text"]
    assert turn["agent_text"].endswith("Your ticket is open; the team will email you.")
    repeated = json.loads(third.json["messages"][-1]["content"])
    assert repeated["result"]["ticket_id"] == tickets[0].ticket_id
    [record] = stack.sink.records.values()
    assert [(a.tool, a.outcome, a.confirmation) for a in record.tool_audit] == [
        ("create_ticket", "ok", "confirmed"),
        ("create_ticket", "duplicate", "not_needed"),
    ]
    assert [(a.type, a.outcome) for a in record.client_action_audit] == [
        ("client_action", "sent"),
        ("user_confirmed", "accepted"),
    ]
    assert record.metrics[0].tool_ms is not None
    # Every request is billed, the wasted speculation's too.
    assert record.usage.llm_requests == len(requests)
    assert record.usage.speculations_wasted >= len(requests) - 3
    assert record.usage.stt_audio_s > 0


async def test_declined_confirmation_creates_no_ticket(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The caller says no in the app: no ticket, and the audit says declined."""
    models = _models()
    result, stack = await _call(livekit_server, tmp_path, models, confirm=False)
    assert result["ok"], result
    assert TicketStore.in_data_dir(tmp_path).tickets() == []
    [record] = stack.sink.records.values()
    assert [(a.outcome, a.confirmation) for a in record.tool_audit] == [("declined", "declined")]
