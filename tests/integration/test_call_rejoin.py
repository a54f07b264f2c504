"""One call id, one recorded conversation: joining again with the same voice token runs no
second session, through the real LiveKit server, Redis, the agent and the post-call pipeline.

LiveKit dispatches the agent whenever a room is created from the token, so a caller who left and
joins again (within the token's TTL) after the room closed would otherwise get a second agent
job under the same call id. Here the caller talks (the agent runs a tool), hangs up, and joins
again with the very same token, once at once and once after the room is gone: each time the
server ends the rejoin (`ROOM_DELETED`), and the store ends up with exactly one call, whose
record holds everything said and the tool call.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from livekit import api

from tests.integration.postcall_support import (
    eventually,
    fast_options,
    fresh_redis,
    postcall_settings,
    report_json,
    running_worker,
)
from tests.integration.stack import speech, voice_stack
from tests.integration.test_worker_dispatch import watching_logs
from voice_agent.agent.runner import build_call_runner
from voice_agent.agent.worker import AgentWorker, WorkerOptions
from voice_agent.caller.simulated_caller import CallerOptions, SimulatedCaller
from voice_agent.devstack.livekit_server import LiveKitEndpoint
from voice_agent.devstack.processes import free_port
from voice_agent.postcall.handover import PostCallSink
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.store import ReportStore
from voice_agent.providers.factory import build_providers
from voice_agent.server.app import create_app
from voice_agent.settings import Settings
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall, TranscriptionReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
QUESTION = "My VPN keeps dropping, what can I do?"
ANSWER = "The runbook says to switch the VPN to TCP; try that and call back if it drops again."
STAFF_TOKEN = "rejoin-staff-token-0123456789abcdef"


@dataclass
class Stack:
    settings: Settings
    url: str
    livekit: LiveKitEndpoint


@contextlib.asynccontextmanager
async def _stack(livekit: LiveKitEndpoint, redis_url: str, tmp: Path) -> AsyncIterator[Stack]:
    """Token service, agent worker handing over to Redis, post-call worker, scripted models."""
    models = ScriptedOpenAI(
        chat=[
            ChatReply(
                text="Let me look that up.",
                tool_calls=[
                    ScriptedToolCall(name="search_runbooks", arguments='{"query": "VPN drops"}')
                ],
            ),
            ChatReply(text=ANSWER),
            ChatReply(text=report_json()),
        ],
        transcriptions=[TranscriptionReply(text=QUESTION)],
    )
    port = free_port()
    async with models, contextlib.AsyncExitStack() as stack:
        settings = postcall_settings(
            tmp,
            await fresh_redis(redis_url),
            models.base_url,
            livekit_url=livekit.ws_url,
            livekit_api_key=livekit.api_key,
            livekit_api_secret=livekit.api_secret,
            port=port,
            staff_token=STAFF_TOKEN,
            token_rate_limit="1000/minute",
            stt="openai",
            tts="openai",
            stt_language="en",
            profile=ROOT / "deploy" / "profiles" / "support.toml",
        )
        runner = web.AppRunner(create_app(settings))
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        providers = build_providers(settings)
        stack.push_async_callback(providers.aclose)
        sink = await stack.enter_async_context(PostCallSink.from_settings(settings))
        entrypoint, tool_kit = await build_call_runner(settings, providers, sink=sink)
        stack.push_async_callback(tool_kit.aclose)
        stack.push_async_callback(entrypoint.aclose)
        worker = AgentWorker(
            settings=settings, entrypoint=entrypoint, options=WorkerOptions(max_jobs=4)
        )
        await stack.enter_async_context(worker)
        await worker.wait_registered()
        await stack.enter_async_context(running_worker(settings, fast_options(settings)))
        yield Stack(settings=settings, url=f"http://127.0.0.1:{port}", livekit=livekit)


async def _grant(stack: Stack) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{stack.url}/api/voice-token", json={}) as resp,
    ):
        assert resp.status == 200
        return dict(await resp.json())


async def _room_exists(stack: Stack, room: str) -> bool:
    lk = api.LiveKitAPI(stack.livekit.http_url, stack.livekit.api_key, stack.livekit.api_secret)
    try:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))
    finally:
        await lk.aclose()
    return any(r.name == room for r in rooms.rooms)


async def _stored(stack: Stack) -> list[Any]:
    async with await ReportStore.open(ReportStore.url_from_settings(stack.settings)) as store:
        return list((await store.list_calls(limit=200)).items)


async def _done(stack: Stack, call_id: str) -> Any:
    async def probe() -> Any:
        async with await ReportStore.open(ReportStore.url_from_settings(stack.settings)) as store:
            call = await store.get_call(call_id)
        return call if call is not None and call.status is CallStatus.DONE else None

    return await eventually(probe, timeout_s=40, what="the call's report")


@pytest.mark.parametrize("when", ["at_once", "after_the_room_closed"])
async def test_rejoining_with_the_same_token_runs_no_second_session(
    livekit_server: LiveKitEndpoint, redis_url: str, tmp_path: Path, when: str
) -> None:
    """The caller talks, hangs up and joins again with the same token: the server ends the
    rejoin at once and says so, no second session runs, and the store holds exactly one call
    with everything said and the tool call."""
    async with _stack(livekit_server, redis_url, tmp_path) as stack:
        grant = await _grant(stack)
        call_id = grant["room"].removeprefix("call-")
        with watching_logs() as logs:
            first = await SimulatedCaller(
                options=CallerOptions(
                    url=stack.url, grant=grant, utterances=(await speech(QUESTION),)
                )
            ).run()
            assert first["ok"], first
            if when == "after_the_room_closed":
                await logs.wait_for("call.room_closed", call_id=call_id, reason="caller_gone")

                async def room_gone() -> bool:
                    return not await _room_exists(stack, grant["room"])

                await eventually(room_gone, what="the room gone")
            again = await SimulatedCaller(
                options=CallerOptions(url=stack.url, grant=grant, agent_join_timeout_s=30)
            ).run()
            if when == "after_the_room_closed":
                # A new room, so LiveKit dispatched a second job: refused, the room closed.
                refused = await logs.wait_for("call.rejoin_refused", call_id=call_id)
                assert refused["session_job_id"] is not None
        call = await _done(stack, call_id)
        stored = await _stored(stack)

    assert not again["ok"]
    assert again["error"] == "the server ended the call (ROOM_DELETED)"
    assert again["turns"] == []
    assert again["greeting"] is None
    sessions = [e for e in logs.entries if e["event"] == "call.joined"]
    assert len(sessions) == 1, sessions
    assert [c.call_id for c in stored] == [call_id]
    said = [(t.speaker, t.text) for t in call.record.transcript]
    assert ("user", QUESTION) in said
    assert any(s == "agent" and ANSWER in text for s, text in said)
    [tool] = call.record.tool_audit
    assert tool.tool == "search_runbooks"
    assert tool.outcome == "ok"
    assert call.record.complete
    assert call.record.end_reason == "user_left"
    assert first["turns"][0]["user_text"] == QUESTION


async def test_a_second_dispatch_into_a_live_call_is_ignored_and_the_call_goes_on(
    livekit_server: LiveKitEndpoint, tmp_path: Path
) -> None:
    """Another dispatch of the agent into a call in progress (same call id) runs no session and
    leaves the room alone: the caller's next question is answered by the first session."""
    first_q, second_q = "Is the VPN down?", "And email?"
    models = ScriptedOpenAI(
        chat=[ChatReply(text="No, it is up."), ChatReply(text="Email works too.")],
        transcriptions=[TranscriptionReply(text=first_q), TranscriptionReply(text=second_q)],
    )
    async with models, voice_stack(livekit_server, tmp_path, models=models) as stack:
        with watching_logs() as logs:

            async def dispatch_again(turns_done: int) -> None:
                [job] = logs.named("job.started")
                lk = api.LiveKitAPI(
                    livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret
                )
                try:
                    await lk.agent_dispatch.create_dispatch(
                        api.CreateAgentDispatchRequest(
                            agent_name=stack.settings.agent_name,
                            room=job["room"],
                            metadata=json.dumps({"call_id": job["call_id"]}),
                        )
                    )
                finally:
                    await lk.aclose()
                await logs.wait_for("call.duplicate_dispatch_ignored", call_id=job["call_id"])

            result = await stack.call(
                await speech(first_q), await speech(second_q), between_turns=dispatch_again
            )
            await logs.wait_for("call.ended")
    assert result["ok"], result
    assert [t["agent_text"] for t in result["turns"]] == ["No, it is up.", "Email works too."]
    assert len(logs.named("job.started")) == 2
    assert len(logs.named("call.joined")) == 1
    assert logs.named("call.room_closed", reason="rejoin_refused") == []
    [record] = stack.sink.records.values()
    assert [t.text for t in record.transcript if t.speaker == "user"] == [first_q, second_q]
