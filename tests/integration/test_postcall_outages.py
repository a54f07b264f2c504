"""The post-call worker when its dependencies go away: Redis stopped under it, and a store that
stays unavailable past the retry budget."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from arq.constants import result_key_prefix as RESULT_KEY_PREFIX
from arq.constants import retry_key_prefix as RETRY_KEY_PREFIX
from structlog.testing import capture_logs

from tests.integration.postcall_support import (
    events_of,
    eventually,
    fast_options,
    fresh_redis,
    log_events,
    postcall_process,
    postcall_settings,
    report_json,
    running_worker,
    wait_for_status,
)
from tests.postgres_cluster import INSTALL_HINT, find_postgres_bin, running_cluster
from tests.report_samples import sample_record
from voice_agent.devstack.processes import ManagedProcess, free_port
from voice_agent.devstack.redis_server import redis_process
from voice_agent.postcall.handover import PostCallSink
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import QUEUE_NAME, PostCallQueue, connect, job_id_for, worker_alive
from voice_agent.postcall.store import ReportStore
from voice_agent.testing.openai_script import ChatReply, Timeline
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


async def _tries(queue: PostCallQueue, call_id: str) -> int:
    """How many times arq has started the call's job so far."""
    raw = await queue.redis.get(f"{RETRY_KEY_PREFIX}{job_id_for(call_id)}")
    return int(raw or 0)


async def _job_finished(queue: PostCallQueue, call_id: str) -> bool:
    """True once arq has recorded the call's job as finished (its result is kept)."""
    return bool(await queue.redis.exists(f"{RESULT_KEY_PREFIX}{job_id_for(call_id)}"))


async def _retried_past_the_budget(queue: PostCallQueue, call_id: str, budget: int) -> None:
    """Wait until the job has run more often than the try budget, and check it is not over."""

    async def past() -> bool:
        return await _tries(queue, call_id) > budget + 2

    await eventually(past, timeout_s=60, what="the job to be retried past its budget")
    assert not await _job_finished(queue, call_id)
    assert await queue.redis.zscore(QUEUE_NAME, job_id_for(call_id)) is not None


async def test_store_locked_past_the_retry_budget_keeps_the_job_until_dead_is_recorded(
    redis_url: str, tmp_path: Path
) -> None:
    """SQLite locked by another connection's write transaction for longer than every try:
    arq never records the job finished; once the lock is gone the call is recorded dead with
    the store's error, once, and only then does the job end."""
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = postcall_settings(
            tmp_path, url, models.base_url, postcall_max_tries=2, database_timeout_s=0.3
        )
        async with running_worker(settings, fast_options(settings)) as deps:
            locker = sqlite3.connect(tmp_path / "voice_agent.sqlite3", isolation_level=None)
            try:
                locker.execute("BEGIN IMMEDIATE")  # holds the write lock until rolled back
                async with PostCallSink.from_settings(settings) as sink:
                    await sink.submit(sample_record("s1"))
                await _retried_past_the_budget(deps.queue, "s1", budget=2)
            finally:
                locker.rollback()
                locker.close()
            call = await wait_for_status(deps.store, "s1", CallStatus.DEAD, timeout_s=30)
            await eventually(lambda: _job_finished(deps.queue, "s1"), what="the job's end")
            page = await deps.store.list_calls()
        assert not models.requests_to(CHAT_PATH)  # no try got as far as the model
    assert [c.call_id for c in page.items] == ["s1"]
    assert call.last_error is not None
    assert "locked" in call.last_error
    assert events_of(call) == ["dead"]


async def test_postgres_down_past_the_retry_budget_keeps_the_job_until_dead_is_recorded(
    redis_url: str, tmp_path: Path
) -> None:
    """PostgreSQL stopped for longer than every try: the job stays queued; once PostgreSQL is
    back on its port the call is recorded dead, once."""
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        pytest.fail(INSTALL_HINT)
    url = await fresh_redis(redis_url)
    with running_cluster(bin_dir, tmp_path / "postgres.log") as cluster:
        settings = postcall_settings(
            tmp_path, url, None, postcall_max_tries=2, database_url=cluster.url,
            database_timeout_s=1.0,
        )  # fmt: skip
        async with running_worker(settings, fast_options(settings)) as deps:
            await asyncio.to_thread(cluster.stop)
            async with PostCallSink.from_settings(settings) as sink:
                await sink.submit(sample_record("p1"))
            await _retried_past_the_budget(deps.queue, "p1", budget=2)
            await asyncio.to_thread(cluster.start)
            call = await wait_for_status(deps.store, "p1", CallStatus.DEAD, timeout_s=30)
            await eventually(lambda: _job_finished(deps.queue, "p1"), what="the job's end")
            page = await deps.store.list_calls()
    assert [c.call_id for c in page.items] == ["p1"]
    assert call.last_error is not None
    assert events_of(call) == ["dead"]


async def test_store_locked_mid_try_and_freed_within_the_budget_finishes_the_call(
    redis_url: str, tmp_path: Path
) -> None:
    """The store locked while the model writes the report, freed a moment later: the next
    try takes over its own claim at once (no wait for it to lapse) and the call is done."""
    url = await fresh_redis(redis_url)
    model_answers = asyncio.Event()
    slow = ChatReply(text=report_json(), timeline=Timeline(stall_after=0, resume=model_answers))
    again = [ChatReply(text=report_json()) for _ in range(3)]
    async with ScriptedOpenAI(chat=[slow, *again]) as models:
        settings = postcall_settings(
            tmp_path, url, models.base_url, postcall_max_tries=3, database_timeout_s=0.3
        )
        options = fast_options(settings, attempt_timeout_s=30.0)  # a lapse would be noticed
        with capture_logs() as logs:
            async with running_worker(settings, options) as deps:
                async with PostCallSink.from_settings(settings) as sink:
                    await sink.submit(sample_record("m1"))
                await asyncio.wait_for(models.wait_for_requests(CHAT_PATH, 1), 30)
                locker = sqlite3.connect(tmp_path / "voice_agent.sqlite3", isolation_level=None)
                try:
                    locker.execute("BEGIN IMMEDIATE")
                    model_answers.set()

                    async def failed_once() -> bool:
                        return await _tries(deps.queue, "m1") >= 2

                    await eventually(failed_once, what="the try to fail on the lock")
                finally:
                    locker.rollback()
                    locker.close()
                call = await wait_for_status(deps.store, "m1", CallStatus.DONE, timeout_s=20)
    assert call.report is not None
    assert not call.report.needs_review
    assert not [e for e in logs if e["event"] == "postcall.claim_held"]
    assert events_of(call).count("started") == 2  # the failed try and the one that finished
