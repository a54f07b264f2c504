"""Nothing lost, nothing done twice: a `kill -9`ed post-call worker, and Redis down at call end."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.integration.postcall_support import (
    events_of,
    eventually,
    fast_options,
    fresh_redis,
    postcall_process,
    postcall_settings,
    report_json,
    running_worker,
    ticket_rows,
    wait_for_status,
)
from tests.report_samples import sample_record
from voice_agent.backoff import ReconnectPolicy
from voice_agent.devstack.processes import ManagedProcess, free_port
from voice_agent.devstack.redis_server import redis_process
from voice_agent.postcall.handover import PostCallSink, SpoolFlusher
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import PostCallQueue, connect, health_key
from voice_agent.postcall.spool import RecordSpool
from voice_agent.postcall.store import ReportStore
from voice_agent.testing.openai_script import ChatReply, Hang
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

pytestmark = pytest.mark.integration


async def test_killed_worker_job_is_retried_and_the_ticket_exists_once(
    redis_url: str, tmp_path: Path
) -> None:
    """`kill -9` while the model is thinking: a new worker reruns the job; one ticket."""
    url = await fresh_redis(redis_url)
    replies: list[ChatReply | Hang] = [Hang(), ChatReply(text=report_json())]
    async with ScriptedOpenAI(chat=replies) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("k1"))
        store = await ReportStore.open(ReportStore.url_from_settings(settings))
        try:
            async with postcall_process(tmp_path, url, models.base_url, "first") as first:
                await asyncio.wait_for(models.wait_for_requests(CHAT_PATH, 1), 60)
                mid_job = await store.get_call("k1")
                first.send_signal(signal.SIGKILL)
                assert await first.wait() == -signal.SIGKILL
            assert mid_job is not None
            assert mid_job.status is CallStatus.PROCESSING
            async with postcall_process(tmp_path, url, models.base_url, "second") as second:
                call = await wait_for_status(store, "k1", CallStatus.DONE, timeout_s=60)
                second.send_signal(signal.SIGTERM)  # a graceful stop, while idle
                assert await asyncio.wait_for(second.wait(), 20) == 0
            redis = aioredis.from_url(url)  # type: ignore[no-untyped-call]  # redis 5 (arq needs <6)
            try:
                health = await redis.exists(health_key(pid=second.pid))
            finally:
                await redis.aclose()
        finally:
            await store.close()
        assert len(models.requests_to(CHAT_PATH)) == 2
    assert ticket_rows(tmp_path) == 1
    assert events_of(call).count("started") == 2
    assert call.attempts == 2
    assert call.report is not None
    assert not call.report.needs_review
    assert health == 0  # the stopped worker took its health signal with it


async def test_record_spooled_while_redis_is_down_is_reported_once_it_returns(
    tmp_path: Path,
) -> None:
    """Redis stopped at call end: the record waits in the spool and is reported once, later."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"

    def redis_server() -> ManagedProcess:
        return redis_process(port=port, data_dir=None, log_file=tmp_path / "redis.log")

    server = redis_server()
    await server.start()
    await server.wait_ready(30)
    spool = RecordSpool(directory=tmp_path / "spool")
    queue = PostCallQueue(redis=connect(url, timeout_s=1.0))
    flusher = SpoolFlusher(
        spool=spool,
        queue=queue,
        backoff=ReconnectPolicy(initial_delay_s=0.05, max_delay_s=0.2),
        timeout_s=2.0,
    )
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        try:
            async with PostCallSink(spool=spool, queue=queue, flusher=flusher) as sink:
                await server.stop()
                await sink.submit(sample_record("r1"))  # returns: the record is on disk
                assert spool.pending() == ["r1"]
                server = redis_server()
                await server.start()
                await server.wait_ready(30)

                async def flushed() -> bool:
                    return not spool.pending()

                await eventually(flushed, timeout_s=30, what="the spool to be flushed")
                await sink.submit(sample_record("r1"))  # a late duplicate hand-over
            async with running_worker(settings, fast_options(settings)) as deps:
                call = await wait_for_status(deps.store, "r1", CallStatus.DONE)
                assert await deps.queue.enqueue("r1") is False  # its job id stays taken
        finally:
            await server.stop()
        assert len(models.requests_to(CHAT_PATH)) == 1
    assert call.source == "spool"
    assert ticket_rows(tmp_path) == 1
    assert events_of(call).count("started") == 1
