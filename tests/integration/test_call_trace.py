"""One call, one trace: token service, worker and post-call worker export to a real Jaeger, and
the trace read back through its query API holds every stage, linked across the three services."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.integration.faults.fault_stack import fault_stack
from tests.jaeger import Jaeger, jaeger
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall

pytestmark = pytest.mark.integration

SAY = "My VPN keeps dropping."
ANSWER = "Restart the VPN client and sign in again."
STAGES = {
    "token.mint", "webhook.room_finished",  # the token service
    "call", "turn", "end_of_turn", "stt", "llm", "tool search_runbooks", "tts",  # the worker
    "postcall.job", "postcall.report", "integration ticket", "integration email_draft",
}  # fmt: skip


async def test_a_call_is_one_trace_from_the_token_to_the_post_call_integrations(
    tmp_path: Path,
) -> None:
    """A call with a tool reads back from Jaeger as one trace: every stage there, call_id on
    every span, the worker's call and LiveKit's room_finished webhook under the mint, the
    post-call job under the call."""
    async with (
        jaeger(tmp_path) as collector,
        fault_stack(
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=collector.otlp_url,
            OTEL_BSP_SCHEDULE_DELAY="200",
        ) as stack,
    ):
        stack.script(
            SAY,
            ChatReply(tool_calls=[ScriptedToolCall("search_runbooks", '{"query": "vpn"}')]),
            ChatReply(text=ANSWER),
        )
        result = await stack.call(SAY)
        assert result["ok"], result
        call_id = result["call_id"]
        assert (await stack.stored(call_id))["status"] == "done"
        spans = await _spans_of_call(collector, call_id)
    by_id = {s["spanID"]: s for s in spans}
    names = {s["operationName"] for s in spans}
    assert names >= STAGES, STAGES - names
    assert {s["traceID"] for s in spans} == {spans[0]["traceID"]}
    assert all(_tag(s, "call_id") == call_id for s in spans)
    [mint] = _named(spans, "token.mint")
    [call] = _named(spans, "call")
    [job] = _named(spans, "postcall.job")
    assert (_service(mint), _service(call), _service(job)) == (
        "voice-agent-token",
        "voice-agent-worker",
        "voice-agent-postcall",
    )
    assert _parent(call) == mint["spanID"]
    [webhook] = _named(spans, "webhook.room_finished")
    assert _parent(webhook) == mint["spanID"]
    assert _parent(job) == call["spanID"]
    [tool] = _named(spans, "tool search_runbooks")
    # The reply ran under its turn, or under the speculation that prepared it before the commit.
    turn = by_id[_parent(tool)]
    assert turn["operationName"] in {"turn", "speculation"}
    assert _parent(turn) == call["spanID"]
    assert {by_id[_parent(s)]["operationName"] for s in _named(spans, "integration ticket")} == {
        "postcall.job"
    }


async def _spans_of_call(collector: Jaeger, call_id: str, timeout_s: float = 30) -> list[Any]:
    """Every span of the call's traces once all stages have arrived (spans are exported in
    batches, the post-call worker's last)."""
    async with asyncio.timeout(timeout_s):
        while True:
            spans: dict[str, Any] = {}
            for service in ("voice-agent-token", "voice-agent-worker", "voice-agent-postcall"):
                for found in await collector.traces(service, call_id=call_id):
                    for span in found["spans"]:
                        span["service"] = found["processes"][span["processID"]]["serviceName"]
                        spans[span["spanID"]] = span
            if {s["operationName"] for s in spans.values()} >= STAGES:
                return list(spans.values())
            await asyncio.sleep(0.25)


def _named(spans: list[Any], name: str) -> list[Any]:
    return [s for s in spans if s["operationName"] == name]


def _tag(span: Any, key: str) -> Any:
    return next((t["value"] for t in span["tags"] if t["key"] == key), None)


def _service(span: Any) -> str:
    return str(span["service"])


def _parent(span: Any) -> str:
    [ref] = [r for r in span["references"] if r["refType"] == "CHILD_OF"]
    return str(ref["spanID"])
