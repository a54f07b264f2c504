"""Fault matrix, processes: the agent worker, the post-call worker and LiveKit killed mid-call
(SIGKILL: no chance to clean up). The supervisor restarts each; the call is recorded once."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.integration.devstack_support import pids, restart_count
from tests.integration.faults.fault_stack import FaultStack
from voice_agent.testing.openai_script import ChatReply, Hang, ScriptedToolCall, Timeline

pytestmark = pytest.mark.integration


async def _kill(stack: FaultStack, child: str) -> None:
    """SIGKILL one of dev's children and wait until the supervisor has it running again."""
    restarts = restart_count(stack.dev, child)
    os.kill(pids(stack.dev)[child], signal.SIGKILL)
    async with asyncio.timeout(60):
        while restart_count(stack.dev, child) == restarts:  # noqa: ASYNC110 - log lines arrive on a reader task
            await asyncio.sleep(0.1)


def _partial_and_flagged(call: dict[str, object]) -> None:
    """What a call whose agent died looks like in the store."""
    record, report = call["record"], call["report"]
    assert isinstance(record, dict)
    assert isinstance(report, dict)
    assert call["status"] == "done", call.get("last_error")
    assert not record["complete"]
    assert record["end_reason"] is None
    assert report["needs_review"]
    assert "partial_record" in report["review_reasons"]
    assert call["source"] in ("journal", "webhook")  # a restarted agent's sweep, or LiveKit's
    if call["source"] == "journal":
        assert "recovered_from_journal" in report["review_reasons"]


async def test_agent_worker_killed_mid_reply(stack: FaultStack) -> None:
    """SIGKILL of the agent worker while it speaks: the call is recorded once, partial and
    flagged for review; the restarted worker serves a new call."""
    say = "Tell me about the outage"
    slow = Timeline(chunk_delay_s=0.2, stall_after=8)  # speaks a sentence, then keeps going
    stack.script(say, ChatReply(text="The outage started at nine. We are on it and", timeline=slow))
    before = await stack.calls_listed()
    call = asyncio.create_task(stack.call(say, turn_timeout_s=6))
    await stack.agent_said("The outage started at nine.")
    await _kill(stack, "agent-worker")
    result = await call
    assert not result["ok"]  # the agent vanished mid-reply
    stored = await stack.settle(result["call_id"], before)
    _partial_and_flagged(stored)
    assert [t["text"] for t in stored["record"]["transcript"] if t["speaker"] == "user"] == [say]
    assert stack.tickets(result["call_id"]) == 1


async def test_agent_worker_killed_mid_tool(stack: FaultStack) -> None:
    """SIGKILL of the agent worker while a tool runs: recorded once, partial, flagged."""
    say = "Look up the archive for me"
    lookup = ScriptedToolCall(name="slow_lookup", arguments='{"topic": "vpn"}')
    stack.script(say, ChatReply(tool_calls=[lookup]))
    before = await stack.calls_listed()
    call = asyncio.create_task(stack.call(say, turn_timeout_s=6))
    async with asyncio.timeout(30):
        while not (started := list(stack.data_dir.glob("slow-lookup-*.started"))):  # noqa: ASYNC110 - the tool marks a file
            await asyncio.sleep(0.05)
    await _kill(stack, "agent-worker")
    result = await call
    assert started[0].name == f"slow-lookup-{result['call_id']}.started"
    stored = await stack.settle(result["call_id"], before)
    _partial_and_flagged(stored)
    assert stored["record"]["tool_audit"] == []  # the tool never finished, so never ran twice


async def test_postcall_worker_killed_mid_job(stack: FaultStack) -> None:
    """SIGKILL of the post-call worker while the model writes the report: the restarted
    worker reruns the job; one complete record, done, one ticket."""
    say = "My laptop will not start"
    stack.script_report(say, Hang())
    before = await stack.calls_listed()
    result = await stack.call(say)
    assert result["ok"], result
    await stack.model_asked(say, report=True)
    await _kill(stack, "postcall-worker")
    stored = await stack.settle(result["call_id"], before)
    assert stored["status"] == "done"
    assert stored["record"]["complete"]
    assert [e["event"] for e in stored["job_history"]].count("started") == 2
    assert stack.tickets(result["call_id"]) == 1


async def test_livekit_restarted_mid_call(stack: FaultStack) -> None:
    """SIGKILL of the LiveKit server during a call: it comes back on its port with its keys,
    the call is recorded once, and the worker (registered again) serves a new call."""
    say = "What is the status of the VPN"
    before = await stack.calls_listed()

    async def restart_livekit() -> None:
        await _kill(stack, "livekit")

    result = await stack.call(say, before_first_turn=restart_livekit, turn_timeout_s=6)
    stored = await stack.settle(result["call_id"], before)
    assert stored["status"] == "done"
    assert stored["record"]["complete"]
