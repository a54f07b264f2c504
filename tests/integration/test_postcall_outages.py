"""The post-call worker when its dependencies go away: Redis stopped under it, and a store that
stays unavailable past the retry budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.postcall_support import (
    events_of,
    eventually,
    log_events,
    postcall_process,
    postcall_settings,
    report_json,
    wait_for_status,
)
from tests.report_samples import sample_record
from voice_agent.devstack.processes import ManagedProcess, free_port
from voice_agent.devstack.redis_server import redis_process
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import PostCallQueue, connect, worker_alive
from voice_agent.postcall.store import ReportStore
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

pytestmark = pytest.mark.integration


async def test_worker_rides_out_a_redis_outage_and_runs_the_job_queued_before_it(
    tmp_path: Path,
) -> None:
    """Redis stopped under a running worker: the process stays up and waits with backoff;
    Redis back on its port with its append-only data, the worker reports healthy again and
    runs the job that was queued before the outage, once."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def redis_server() -> ManagedProcess:
        return redis_process(port=port, data_dir=tmp_path / "redis", log_file=tmp_path / "r.log")

    server = redis_server()
    await server.start()
    await server.wait_ready(30)
    log = tmp_path / "outage.log"
    try:
        async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
            settings = postcall_settings(tmp_path, url, models.base_url)
            async with (
                await ReportStore.open(ReportStore.url_from_settings(settings)) as store,
                postcall_process(tmp_path, url, models.base_url, "outage") as worker,
            ):

                async def healthy() -> bool:
                    return await worker_alive(url, worker.pid)

                await eventually(healthy, timeout_s=60, what="the worker's health key")
                queue = PostCallQueue(redis=connect(url))
                try:
                    await queue.put_record(sample_record("o1"), source="agent")
                    assert await queue.enqueue("o1", defer_s=2.0)  # due during the outage
                finally:
                    await queue.aclose()
                await server.stop()

                async def waited_twice() -> bool:
                    return len(log_events(log, "postcall.waiting_for_redis")) >= 2

                await eventually(waited_twice, timeout_s=30, what="the worker to wait for Redis")
                assert worker.returncode is None
                assert log_events(log, "postcall.redis_lost")
                server = redis_server()
                await server.start()
                await server.wait_ready(30)
                call = await wait_for_status(store, "o1", CallStatus.DONE, timeout_s=60)
                await eventually(healthy, timeout_s=30, what="the health key after the outage")
                assert worker.returncode is None
            assert len(models.requests_to(CHAT_PATH)) == 1
    finally:
        await server.stop()
    assert log_events(log, "postcall.redis_back")
    assert events_of(call).count("started") == 1
