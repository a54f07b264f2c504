"""MCP tools end to end: a real call through LiveKit in which the scripted model calls the tools
of a real MCP server (tests/mcp_servers/orders_mcp.py over stdio) that the worker started from
the agent profile.

The caller confirms the refund over the data channel, as the web app would; the server's journal
shows what reached it, with which idempotency key.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.stack import speech, voice_stack
from tests.mcp_servers import ORDERS_MCP, Journal
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI
from voice_agent.tooling.mcp import IDEMPOTENCY_META

pytestmark = pytest.mark.integration

QUESTION = "Where is my order 1234? If it shipped late, refund twenty euros."


def _profile(tmp: Path, journal: Journal) -> Path:
    command = json.dumps(["python", str(ORDERS_MCP), "--journal", str(journal.path)])
    path = tmp / "orders-agent.toml"
    path.write_text(
        'instructions = "You answer questions about orders."\n'
        'greeting = "Hi, this is the order line."\n'
        "[tools]\n"
        'allowed = ["orders.lookup_order", "orders.refund_order"]\n'
        "[client_actions]\n"
        'allowed = ["request_confirm"]\n'
        "[[mcp_servers]]\n"
        'name = "orders"\n'
        f"command = {command}\n"
    )
    return path


def _models() -> ScriptedOpenAI:
    lookup = ScriptedToolCall(name="orders__lookup_order", arguments='{"order_id": "ORD-1234"}')
    purge = ScriptedToolCall(name="orders__purge_orders")  # not allowed: the model tries anyway
    refund = ScriptedToolCall(
        name="orders__refund_order", arguments='{"order_id": "ORD-1234", "amount": 20}'
    )
    return ScriptedOpenAI(
        chat=[
            ChatReply(text="Let me check.", tool_calls=[lookup, purge]),
            ChatReply(tool_calls=[refund]),
            ChatReply(text="It shipped, and your twenty euro refund is on its way."),
        ],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )


async def test_model_calls_mcp_tools_through_a_real_call(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """The model sees only the allowed MCP tools under their function names; the lookup runs,
    the unlisted purge is refused, the caller confirms the refund and the server makes it once
    with the audited idempotency key; the audit names the tools `<server>.<tool>`."""
    journal = Journal(tmp_path / "orders.jsonl")
    models = _models()
    async with (
        models,
        voice_stack(
            livekit_server, tmp_path, models=models, profile=_profile(tmp_path, journal),
            stt_language="en",
            # The scripted STT answers every request with the whole question: a speculation at
            # the pause after "1234?" would hear it all and ask the model early, out of script.
            speculation_max_per_turn=0,
        ) as stack,
    ):  # fmt: skip
        result = await stack.call(await speech(QUESTION), confirm=True)
        async with asyncio.timeout(15):
            while stack.worker.active_jobs:  # noqa: ASYNC110 - polled
                await asyncio.sleep(0.05)
    assert result["ok"], result
    first, second, _third = models.requests_to("/v1/chat/completions")
    offered = {t["function"]["name"] for t in first.json["tools"]}
    assert offered == {"orders__lookup_order", "orders__refund_order"}
    lookup_message, purge_message = second.json["messages"][-2:]
    assert json.loads(lookup_message["content"])["result"]["state"] == "shipped"
    assert json.loads(purge_message["content"])["outcome"] == "refused"
    [turn] = result["turns"]
    assert turn["agent_text"].endswith("your twenty euro refund is on its way.")
    [confirm] = [a for a in result["client_actions"] if a["action"] == "request_confirm"]
    assert confirm["payload"]["prompt"] == "Refund order: order id 'ORD-1234', amount 20?"

    [record] = stack.sink.records.values()
    assert [(a.tool, a.outcome, a.confirmation) for a in record.tool_audit] == [
        ("orders.lookup_order", "ok", "not_needed"),
        ("orders.purge_orders", "refused", "not_needed"),
        ("orders.refund_order", "ok", "confirmed"),
    ]
    [refund] = journal.events("refunded")
    assert refund["key"] == record.tool_audit[2].idempotency_key
    [call] = journal.calls("refund_order")
    assert call["meta"][IDEMPOTENCY_META] == refund["key"]
    assert call["meta"]["voice-agent/call_id"] == record.call_id
    assert journal.calls("purge_orders") == []
    assert len(journal.pids()) == 1  # one server process for the worker
