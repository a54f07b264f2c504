"""A bare agent worker in its own process, for tests that kill one: `python -m
tests.integration.agent_process URL KEY SECRET AGENT_NAME`.

Its entrypoint joins the call's room and stays until the caller leaves (at most a minute); it
prints one JSON line per event (`{"agent_process": "registered" | "joined", ...}`, the latter with
the job id) among its log lines, for the test to read.
"""

from __future__ import annotations

import asyncio
import json
import sys

from livekit import rtc

from tests.helpers import make_settings
from voice_agent.agent import AgentWorker, JobContext, ReconnectPolicy, WorkerOptions

_STAY_S = 60.0


def _say(event: str, **fields: str) -> None:
    print(json.dumps({"agent_process": event, **fields}), flush=True)


async def _entrypoint(job: JobContext) -> None:
    room = rtc.Room()
    left = asyncio.Event()
    room.on("participant_disconnected", lambda _: left.set())
    await room.connect(job.url, job.token)
    _say("joined", job_id=job.job_id, room=job.room_name)
    try:
        await asyncio.wait_for(left.wait(), _STAY_S)
    finally:
        await room.disconnect()


async def main(url: str, key: str, secret: str, agent_name: str) -> None:
    settings = make_settings(
        livekit_url=url, livekit_api_key=key, livekit_api_secret=secret, agent_name=agent_name
    )
    options = WorkerOptions(
        max_jobs=2,
        status_interval_s=0.5,
        ping_interval_s=1.0,
        ping_timeout_s=5.0,
        reconnect=ReconnectPolicy(initial_delay_s=0.1, max_delay_s=0.5),
    )
    async with AgentWorker(settings=settings, entrypoint=_entrypoint, options=options) as worker:
        _say("registered", worker_id=await worker.wait_registered())
        await asyncio.sleep(_STAY_S * 2)  # the test kills us long before


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
