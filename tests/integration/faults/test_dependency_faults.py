"""Fault matrix, dependencies: Redis stopped mid-call, at call end and for longer than the retry
budget; the report store locked past its retry budget. Nothing is lost; one record each."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.devstack_support import pids
from tests.integration.faults.fault_stack import FAST_ENV, FaultStack
from tests.integration.postcall_support import eventually
from voice_agent.postcall.queue import worker_alive

pytestmark = pytest.mark.integration

TRY_BUDGET = int(FAST_ENV["VOICE_AGENT_POSTCALL_MAX_TRIES"])


async def _handover_deferred(stack: FaultStack, call_id: str) -> None:
    """Wait until the agent has spooled the call because Redis did not take it."""

    async def deferred() -> bool:
        found = stack.log_events("postcall.handover_deferred")
        return any(e["call_id"] == call_id for e in found)

    await eventually(deferred, timeout_s=30, what="the hand-over to be spooled")


def _complete_and_clean(call: dict[str, object]) -> None:
    """Recorded once, complete, from this host's spool: by the agent's flusher or by the
    room_finished webhook that reads the same spool (the room closes as the caller leaves, so
    the two race once Redis is back; either hands over the same complete record)."""
    record, report = call["record"], call["report"]
    assert isinstance(record, dict)
    assert isinstance(report, dict)
    assert call["status"] == "done", call.get("last_error")
    assert record["complete"]
    assert record["end_reason"] == "user_left"
    assert call["source"] in ("spool", "webhook")
    assert not report["needs_review"], report["review_reasons"]


async def test_redis_stopped_mid_call(stack: FaultStack) -> None:
    """Redis stopped after the greeting: the conversation goes on, the hand-over waits in the
    spool, and once Redis is back the call is recorded once, complete."""
    say = "Can you reset my password"
    before = await stack.calls_listed()
    result = await stack.call(say, before_first_turn=stack.redis.stop)
    try:
        assert result["ok"], result
        assert result["turns"][0]["agent_text"] == f"You said: {say}"
        await _handover_deferred(stack, result["call_id"])
    finally:
        await stack.redis.start()
    _complete_and_clean(await stack.settle(result["call_id"], before))


async def test_redis_stopped_at_call_end(stack: FaultStack) -> None:
    """Redis stopped while the agent speaks its last reply, just before the caller hangs up:
    the record is spooled and reaches the store once Redis is back."""
    say = "Thanks that is all"
    before = await stack.calls_listed()
    call = asyncio.create_task(stack.call(say))
    try:
        await stack.agent_said(say)  # the echo of it: the last reply is playing
        await stack.redis.stop()
        result = await call
        assert result["ok"], result
        await _handover_deferred(stack, result["call_id"])
    finally:
        await stack.redis.start()
    _complete_and_clean(await stack.settle(result["call_id"], before))


async def test_redis_stopped_longer_than_the_retry_budget(stack: FaultStack) -> None:
    """Redis away for many times the longest retry wait: hand-over and post-call worker keep
    retrying (the worker is never restarted); Redis back, the call is recorded once."""
    say = "Is the mail server down"
    before = await stack.calls_listed()
    worker_pid = pids(stack.dev)["postcall-worker"]
    flushes = len(stack.log_events("spool.flush_failed"))
    result = await stack.call(say, before_first_turn=stack.redis.stop)
    try:
        assert result["ok"], result
        await _handover_deferred(stack, result["call_id"])

        async def retried_often() -> bool:
            return len(stack.log_events("spool.flush_failed")) >= flushes + 5

        await eventually(retried_often, timeout_s=60, what="the spool flusher to keep retrying")
    finally:
        await stack.redis.start()
    _complete_and_clean(await stack.settle(result["call_id"], before))
    assert pids(stack.dev)["postcall-worker"] == worker_pid
    assert await worker_alive(stack.redis.url, worker_pid)


async def test_store_locked_longer_than_the_retry_budget(stack: FaultStack) -> None:
    """SQLite locked by another writer through every try of the post-call job: the job is not
    dropped; once the lock is gone the call is recorded once, dead with the store's error, for
    staff to retry."""
    say = "Please file a ticket about the printer"
    before = await stack.calls_listed()
    with stack.store_locked():
        result = await stack.call(say)
        assert result["ok"], result

        async def past_the_budget() -> bool:
            return await stack.job_tries(result["call_id"]) > TRY_BUDGET + 2

        await eventually(past_the_budget, timeout_s=60, what="tries past the budget")
    stored = await stack.settle(result["call_id"], before, statuses=("dead",))
    assert "locked" in stored["last_error"]
    assert stored["record"]["complete"]
    assert stored["report"] is None
    assert [e["event"] for e in stored["job_history"]] == ["dead"]
