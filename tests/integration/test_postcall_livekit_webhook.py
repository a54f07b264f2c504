"""The real LiveKit server's signed `room_finished` reaches the token service and enqueues once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from aiohttp import web
from livekit import api

from tests.integration.postcall_support import eventually, fresh_redis, postcall_settings
from voice_agent.devstack.livekit_server import (
    LiveKitEndpoint,
    find_livekit_server,
    livekit_process,
    new_key_pair,
)
from voice_agent.devstack.processes import free_port, free_udp_range
from voice_agent.postcall.queue import PostCallQueue, QueuedRecord, connect
from voice_agent.server import webhooks
from voice_agent.server.app import create_app

pytestmark = pytest.mark.integration


async def test_livekit_room_finished_enqueues_the_call(redis_url: str, tmp_path: Path) -> None:
    """A call room closed on a LiveKit server configured with our webhook gets one job."""
    url = await fresh_redis(redis_url)
    key, secret = new_key_pair()
    endpoint = LiveKitEndpoint(port=free_port(), api_key=key, api_secret=secret)
    service_port = free_port()
    settings = postcall_settings(
        tmp_path,
        url,
        None,
        livekit_url=endpoint.ws_url,
        livekit_api_key=key,
        livekit_api_secret=secret,
    )
    app = create_app(settings)
    app[webhooks.WEBHOOK_OPTIONS] = dataclasses.replace(
        app[webhooks.WEBHOOK_OPTIONS], handover_grace_s=0.0
    )
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", service_port).start()
    livekit = livekit_process(
        binary=find_livekit_server(),
        endpoint=endpoint,
        udp_range=free_udp_range(),
        webhook_url=f"http://127.0.0.1:{service_port}/webhooks/livekit",
        log_file=tmp_path / "livekit.log",
    )
    queue = PostCallQueue(redis=connect(url))
    lkapi = api.LiveKitAPI(endpoint.http_url, key, secret)
    try:
        await livekit.start()
        await livekit.wait_ready(60)
        await lkapi.room.create_room(api.CreateRoomRequest(name="call-lk1"))
        await lkapi.room.delete_room(api.DeleteRoomRequest(room="call-lk1"))

        async def record() -> QueuedRecord | None:
            return await queue.get_record("lk1")

        kept = await eventually(record, timeout_s=30, what="the webhook's record")
        jobs = await eventually(queue.redis.queued_jobs, timeout_s=5, what="the job")
    finally:
        await lkapi.aclose()
        await livekit.stop()
        await queue.aclose()
        await runner.cleanup()
    assert kept.source == "webhook"
    assert not kept.record.complete
    assert kept.record.room == "call-lk1"
    assert [j.job_id for j in jobs] == ["call:lk1"]
