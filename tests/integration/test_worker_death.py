"""What LiveKit does with a call whose agent worker dies mid-call (SIGKILL): nothing.

LiveKit 1.13 neither offers the job to another worker nor marks it failed: the dead agent's
participant is dropped once its connection times out, and the caller is left in a room without
an agent (the web client says the agent ended the call). So no second session can start under
the call's id from a re-dispatch; should a later LiveKit start re-dispatching, the call's claim
refuses the second job (`test_call_claims.py`, `test_call_rejoin.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from tests.helpers import make_settings
from tests.integration.test_worker_dispatch import (
    FAST,
    RoomJoiningAgent,
    caller_in_room,
    is_agent,
    new_call,
    wait_for_departure,
    wait_for_participant,
    watching_logs,
)
from voice_agent.agent import AgentWorker
from voice_agent.devstack.livekit_server import LiveKitEndpoint

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
STEP_S = 20.0
# LiveKit drops a participant whose connection went silent after about 20 s.
DEAD_AGENT_DROPPED_S = 60.0


async def _read_event(stdout: asyncio.StreamReader, event: str) -> dict[str, str]:
    while line := await stdout.readline():
        if not line.startswith(b'{"agent_process"'):
            continue  # the process's own log lines
        message = json.loads(line)
        if message["agent_process"] == event:
            return dict(message)
    raise AssertionError(f"the worker process exited before '{event}'")


def _api(livekit: LiveKitEndpoint) -> api.LiveKitAPI:
    return api.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret)


async def _dispatches(livekit: LiveKitEndpoint, room: str) -> list[Any]:
    async with _api(livekit) as lk:
        return list(await lk.agent_dispatch.list_dispatch(room_name=room))


async def _room_closed(livekit: LiveKitEndpoint, room: str) -> None:
    async with _api(livekit) as lk:
        while (await lk.room.list_rooms(api.ListRoomsRequest(names=[room]))).rooms:  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.2)


async def test_a_call_whose_worker_was_killed_is_not_dispatched_again(
    livekit_server: LiveKitEndpoint,
) -> None:
    """SIGKILL the worker running a call while another worker is registered: the dead agent
    leaves the room, and LiveKit offers the job to no one; its dispatch keeps the one job."""
    name = f"test-agent-{secrets.token_hex(4)}"
    settings = make_settings(
        livekit_url=livekit_server.ws_url,
        livekit_api_key=livekit_server.api_key,
        livekit_api_secret=livekit_server.api_secret,
        agent_name=name,
    )
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.agent_process",
        livekit_server.ws_url,
        livekit_server.api_key,
        livekit_server.api_secret,
        name,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert first.stdout is not None
    survivor = RoomJoiningAgent()
    try:
        await asyncio.wait_for(_read_event(first.stdout, "registered"), STEP_S)
        call = new_call(settings)
        async with caller_in_room(call) as room:
            joined = await asyncio.wait_for(_read_event(first.stdout, "joined"), STEP_S)
            agent = await asyncio.wait_for(wait_for_participant(room, is_agent), STEP_S)
            with watching_logs() as logs:
                async with AgentWorker(settings=settings, entrypoint=survivor, options=FAST) as w:
                    await asyncio.wait_for(w.wait_registered(), STEP_S)
                    first.send_signal(signal.SIGKILL)
                    await first.wait()
                    await asyncio.wait_for(
                        wait_for_departure(room, agent.identity), DEAD_AGENT_DROPPED_S
                    )
                    dispatches = await _dispatches(livekit_server, call.room)
                    await room.disconnect()
                    # Once the room is closed nothing can be dispatched into it any more.
                    await asyncio.wait_for(_room_closed(livekit_server, call.room), STEP_S * 3)
    finally:
        if first.returncode is None:
            first.kill()
            await first.wait()
    assert agent.identity == f"agent-{joined['job_id']}"
    [dispatch] = dispatches
    assert [job.id for job in dispatch.state.jobs] == [joined["job_id"]]
    assert logs.named("worker.job_offered") == []
    assert survivor.jobs == []
