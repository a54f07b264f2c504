"""The post-call pipeline on real Redis and SQLite: hand-over, report, integrations, retries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from arq.jobs import Job

from tests.integration.postcall_support import (
    events_of,
    fast_options,
    fresh_redis,
    postcall_settings,
    report_json,
    running_worker,
    ticket_rows,
    wait_for_status,
)
from tests.report_samples import sample_record
from voice_agent.postcall.handover import PostCallSink
from voice_agent.postcall.integrations import idempotency_key
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import QUEUE_NAME, deserialize
from voice_agent.testing.openai_script import ChatReply, ErrorReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

pytestmark = pytest.mark.integration


async def test_handed_over_call_becomes_a_report_with_one_ticket(
    redis_url: str, tmp_path: Path
) -> None:
    """A record handed over by the agent's sink is reported, with its ticket created once."""
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("c1"))
        assert not (tmp_path / "spool" / "c1.json").exists()
        async with running_worker(settings, fast_options(settings)) as deps:
            call = await wait_for_status(deps.store, "c1", CallStatus.DONE)
            ticket = await deps.store.get_integration(idempotency_key("c1", "ticket"))
        request = models.requests_to(CHAT_PATH)[0].json
    assert call.report is not None
    assert not call.report.needs_review
    assert call.report.report.ticket.title == "Duplicate charge on invoice 4471"
    assert call.source == "agent"
    assert ticket is not None
    assert ticket.ok
    assert ticket.result["ticket_id"]
    assert ticket_rows(tmp_path, "c1") == 1
    assert {i.name for i in call.integrations} == {"email_draft", "ticket"}
    assert request["response_format"]["type"] == "json_schema"
    assert "Duplicate" not in json.dumps(request["response_format"])  # schema only, no answer
    history = events_of(call)
    assert history[0] == "started"
    assert history[-1] == "done"
    assert "model_attempt" in history
    assert "report_saved" in history


async def test_invalid_json_twice_gives_the_fallback_report_for_review(
    redis_url: str, tmp_path: Path
) -> None:
    """Two invalid answers: the retry quotes the errors, then the fallback report is flagged."""
    url = await fresh_redis(redis_url)
    replies = [ChatReply(text="Sure! Here is the report."), ChatReply(text='{"summary": ""}')]
    async with ScriptedOpenAI(chat=replies) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("c2"))
        async with running_worker(settings, fast_options(settings)) as deps:
            call = await wait_for_status(deps.store, "c2", CallStatus.DONE)
        second = models.requests_to(CHAT_PATH)[1].json["messages"]
    assert call.report is not None
    assert call.report.needs_review
    assert call.report.review_reasons == ["fallback"]
    assert call.report.model is None
    assert call.report.report.confidence == 0.0
    assert call.report.attempts == 2
    assert second[-1]["role"] == "user"
    assert "not a valid report" in second[-1]["content"]
    assert second[-2] == {"role": "assistant", "content": "Sure! Here is the report."}
    assert ticket_rows(tmp_path, "c2") == 1  # the fallback's ticket fields still open a ticket


async def test_low_confidence_report_is_flagged_for_review(redis_url: str, tmp_path: Path) -> None:
    """A valid report below the review threshold is kept, flagged `low_confidence`."""
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json(confidence=0.3))]) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("c3"))
        async with running_worker(settings, fast_options(settings)) as deps:
            call = await wait_for_status(deps.store, "c3", CallStatus.DONE)
    assert call.report is not None
    assert call.report.needs_review
    assert call.report.review_reasons == ["low_confidence"]
    assert call.report.model == "gpt-4o-mini"


async def test_model_outage_on_every_try_ends_in_the_fallback_report(
    redis_url: str, tmp_path: Path
) -> None:
    """A model that keeps failing is retried with backoff; the last try writes the fallback."""
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ErrorReply(500), ErrorReply(503), ErrorReply(500)]) as models:
        settings = postcall_settings(tmp_path, url, models.base_url, postcall_max_tries=3)
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("c4"))
        async with running_worker(settings, fast_options(settings)) as deps:
            call = await wait_for_status(deps.store, "c4", CallStatus.DONE)
        assert len(models.requests_to(CHAT_PATH)) == 3
    assert call.report is not None
    assert call.report.review_reasons == ["model_unavailable"]
    assert events_of(call).count("retry_scheduled") == 2
    assert call.attempts == 3


async def test_a_done_call_is_not_processed_again(redis_url: str, tmp_path: Path) -> None:
    """Another job for a call already done changes nothing: no model call, no side effect."""
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = postcall_settings(tmp_path, url, models.base_url)
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("c5"))
        async with running_worker(settings, fast_options(settings)) as deps:
            before = await wait_for_status(deps.store, "c5", CallStatus.DONE)
            assert await deps.queue.enqueue("c5", job_id="call:c5:again")
            job = Job(
                "call:c5:again", deps.queue.redis, _queue_name=QUEUE_NAME, _deserializer=deserialize
            )
            assert await job.result(timeout=20, poll_delay=0.05) == "already_done"
            after = await deps.store.get_call("c5")
        assert len(models.requests_to(CHAT_PATH)) == 1
    assert after is not None
    assert after.job_history == before.job_history
    assert ticket_rows(tmp_path, "c5") == 1


async def test_the_agent_handing_over_twice_makes_one_job(redis_url: str, tmp_path: Path) -> None:
    """A second hand-over of the same call (a retry, a flush) enqueues nothing new."""
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path, url, None)
    async with PostCallSink.from_settings(settings) as sink:
        await sink.submit(sample_record("c6", complete=False))
        await sink.submit(sample_record("c6"))
        await sink.submit(sample_record("c6", complete=False))
        jobs = await sink.queue.redis.queued_jobs()
        kept = await sink.queue.get_record("c6")
    assert [j.job_id for j in jobs] == ["call:c6"]
    assert kept is not None
    assert kept.record.complete
