"""Dead-lettered calls and the staff retry: exhausted integrations, `POST /api/calls/{id}/retry`."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.helpers import AppClient
from tests.integration.postcall_support import (
    events_of,
    fast_options,
    fresh_redis,
    postcall_settings,
    report_json,
    running_worker,
    wait_for_status,
)
from tests.report_samples import sample_record
from voice_agent.postcall.handover import PostCallSink
from voice_agent.postcall.integrations import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import record_key
from voice_agent.server import calls_api
from voice_agent.server.app import create_app
from voice_agent.settings import Settings
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import CHAT_PATH, ScriptedOpenAI

pytestmark = pytest.mark.integration

STAFF_TOKEN = "staff-token-for-tests-0123456789"
WEBHOOK_SECRET = "outbound-webhook-secret-0123456789"


@dataclass
class Receiver:
    """A customer's webhook endpoint that fails until told to accept."""

    accept: bool = False
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((dict(request.headers), body))
        return web.json_response({}, status=200 if self.accept else 500)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    endpoint = Receiver()
    app = web.Application()
    app.router.add_post("/hook", endpoint.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield endpoint, str(server.make_url("/hook"))
    finally:
        await server.close()


async def _staff_client(settings: Settings) -> AppClient:
    client = TestClient(TestServer(create_app(settings)))
    await client.start_server()
    return client


async def test_failing_integration_is_dead_lettered_then_staff_retry_finishes_it(
    redis_url: str, tmp_path: Path, receiver: tuple[Receiver, str]
) -> None:
    """Exhausted retries leave the call dead with its error; a staff retry completes it."""
    endpoint, hook_url = receiver
    url = await fresh_redis(redis_url)
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = postcall_settings(
            tmp_path,
            url,
            models.base_url,
            postcall_max_tries=2,
            postcall_webhook_url=hook_url,
            postcall_webhook_secret=WEBHOOK_SECRET,
            staff_token=STAFF_TOKEN,
        )
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("d1"))
        client = await _staff_client(settings)
        try:
            async with running_worker(settings, fast_options(settings)) as deps:
                dead = await wait_for_status(deps.store, "d1", CallStatus.DEAD)
                endpoint.accept = True
                await deps.queue.redis.delete(record_key("d1"))  # expired: the store's copy serves
                resp = await client.post(
                    "/api/calls/d1/retry", headers={"Authorization": f"Bearer {STAFF_TOKEN}"}
                )
                assert resp.status == 202
                assert (await resp.json())["job_id"] == "call:d1:retry:1"
                done = await wait_for_status(deps.store, "d1", CallStatus.DONE)
        finally:
            await client.close()
        assert len(models.requests_to(CHAT_PATH)) == 1  # the report is kept across tries
    assert dead.last_error is not None
    assert "webhook failed" in dead.last_error
    assert events_of(dead)[-1] == "dead"
    history = events_of(done)
    assert "retry_requested" in history
    assert history[-1] == "done"
    assert history.count("integration_skipped") >= 2  # email draft and ticket were not redone
    assert len(endpoint.received) == 3  # two failed tries, then the retry
    headers, body = endpoint.received[-1]
    expected = hmac.new(
        WEBHOOK_SECRET.encode(), f"{headers[TIMESTAMP_HEADER]}.".encode() + body, hashlib.sha256
    ).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"v1={expected}"
    assert headers[IDEMPOTENCY_HEADER] == "postcall:d1:webhook"
    assert json.loads(body)["call_id"] == "d1"


async def test_retry_needs_a_staff_token(redis_url: str, tmp_path: Path) -> None:
    """Without a staff Bearer token the retry endpoint answers 401 and changes nothing."""
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path, url, None, staff_token=STAFF_TOKEN)
    client = await _staff_client(settings)
    try:
        missing = await client.post("/api/calls/d2/retry")
        wrong = await client.post(
            "/api/calls/d2/retry", headers={"Authorization": "Bearer not-the-token"}
        )
        body = await missing.json()
    finally:
        await client.close()
    assert missing.status == 401
    assert wrong.status == 401
    assert body["error"] == "unauthorized"


async def test_retry_of_a_call_that_is_not_dead_is_a_conflict(
    redis_url: str, tmp_path: Path
) -> None:
    """Only dead calls can be retried: a queued call is 409, an unknown one 404."""
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path, url, None, staff_token=STAFF_TOKEN)
    client = await _staff_client(settings)
    auth = {"Authorization": f"Bearer {STAFF_TOKEN}"}
    try:
        async with PostCallSink.from_settings(settings) as sink:
            await sink.submit(sample_record("d3"))
            assert isinstance(client.server, TestServer)
            store = client.server.app[calls_api.REPORT_STORE]
            await store.add_call(sample_record("d3"), source="agent")
            queued = await client.post("/api/calls/d3/retry", headers=auth)
            conflict = await queued.json()
            unknown = await client.post("/api/calls/nope/retry", headers=auth)
            invalid = await client.post("/api/calls/bad$id/retry", headers=auth)
            jobs = await sink.queue.redis.queued_jobs()
    finally:
        await client.close()
    assert queued.status == 409
    assert conflict["error"] == "conflict"
    assert unknown.status == 404
    assert invalid.status == 400
    assert [j.job_id for j in jobs] == ["call:d3"]
