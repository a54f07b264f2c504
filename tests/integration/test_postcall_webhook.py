"""`POST /webhooks/livekit` on real Redis: signatures, `room_finished` as the safety net, dedup."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer
from livekit import api

from tests.helpers import TEST_API_KEY, TEST_API_SECRET, AppClient, recorded_spans
from tests.integration.postcall_support import (
    fast_options,
    fresh_redis,
    postcall_settings,
    report_json,
    running_worker,
    wait_for_status,
)
from tests.report_samples import sample_record
from voice_agent.call_record import CallJournal, TranscriptTurn
from voice_agent.postcall.handover import PostCallSink
from voice_agent.postcall.models import CallStatus
from voice_agent.postcall.queue import PostCallQueue, connect
from voice_agent.server import webhooks
from voice_agent.server.app import create_app
from voice_agent.settings import Settings
from voice_agent.testing.openai_script import ChatReply
from voice_agent.testing.scripted_openai import ScriptedOpenAI

pytestmark = pytest.mark.integration


def event_body(event: str = "room_finished", room: str = "call-w1", metadata: str = "") -> bytes:
    """A LiveKit webhook body, as the server sends it (protobuf JSON, camelCase)."""
    payload: dict[str, Any] = {
        "event": event,
        "room": {
            "sid": "RM_test",
            "name": room,
            "creationTime": "1741944600",
            "metadata": metadata,
        },
        "id": "EV_test",
        "createdAt": "1741944700",
    }
    return json.dumps(payload).encode()


def signed(body: bytes, *, secret: str = TEST_API_SECRET) -> dict[str, str]:
    """The Authorization header LiveKit sends: a JWT with the body's SHA-256."""
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    token = api.AccessToken(TEST_API_KEY, secret).with_sha256(digest).to_jwt()
    return {"Authorization": token, "Content-Type": "application/webhook+json"}


@dataclasses.dataclass
class Hooked:
    client: AppClient
    settings: Settings
    queue: PostCallQueue
    redis_url: str

    async def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        resp = await self.client.post("/webhooks/livekit", data=body, headers=headers)
        return resp.status, await resp.json()

    async def keys(self) -> list[bytes]:
        client = aioredis.from_url(self.redis_url)  # type: ignore[no-untyped-call]  # redis 5 (arq needs <6)
        try:
            return sorted(await client.keys("*"))
        finally:
            await client.aclose()


@pytest.fixture
async def hooked(redis_url: str, tmp_path: Path) -> AsyncIterator[Hooked]:
    url = await fresh_redis(redis_url)
    settings = postcall_settings(tmp_path, url, None)
    app = create_app(settings)
    app[webhooks.WEBHOOK_OPTIONS] = dataclasses.replace(
        app[webhooks.WEBHOOK_OPTIONS], handover_grace_s=0.0
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    queue = PostCallQueue(redis=connect(url))
    try:
        yield Hooked(client=client, settings=settings, queue=queue, redis_url=url)
    finally:
        await queue.aclose()
        await client.close()


async def test_bad_signature_is_401_and_nothing_is_enqueued(hooked: Hooked) -> None:
    """A body signed with another secret is refused with 401 and Redis stays empty."""
    body = event_body()
    status, error = await hooked.post(
        body, signed(body, secret="someone-elses-secret-0123456789abcdef")
    )
    assert status == 401
    assert error["error"] == "unauthorized"
    assert await hooked.keys() == []


async def test_missing_signature_is_401(hooked: Hooked) -> None:
    """No Authorization header: 401, nothing stored."""
    status, _ = await hooked.post(event_body(), {"Content-Type": "application/webhook+json"})
    assert status == 401
    assert await hooked.keys() == []


async def test_tampered_body_is_401(hooked: Hooked) -> None:
    """A valid signature for a different body is refused."""
    headers = signed(event_body(room="call-other"))
    status, _ = await hooked.post(event_body(room="call-w1"), headers)
    assert status == 401
    assert await hooked.keys() == []


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b'{"event": 5}', b"\xff\xfe"])
async def test_signed_body_that_is_no_webhook_event_is_400(hooked: Hooked, body: bytes) -> None:
    """A correctly signed body that is not a LiveKit event is a 400, not a signature failure."""
    status, error = await hooked.post(body, signed(body))
    assert status == 400
    assert error["error"] == "bad_request"
    assert await hooked.keys() == []


async def test_same_room_finished_twice_makes_one_job(hooked: Hooked) -> None:
    """Two deliveries of one `room_finished`: the first enqueues, the second is a duplicate."""
    body = event_body()
    first = await hooked.post(body, signed(body))
    second = await hooked.post(body, signed(body))
    jobs = await hooked.queue.redis.queued_jobs()
    assert first == (200, {"status": "enqueued"})
    assert second == (200, {"status": "duplicate"})
    assert [j.job_id for j in jobs] == ["call:w1"]
    kept = await hooked.queue.get_record("w1")
    assert kept is not None
    assert kept.source == "webhook"
    assert not kept.record.complete


async def test_other_events_and_rooms_are_ignored(hooked: Hooked) -> None:
    """`participant_joined`, or a room that is not a call, is acknowledged and ignored."""
    joined = event_body(event="participant_joined")
    foreign = event_body(room="lobby")
    assert await hooked.post(joined, signed(joined)) == (200, {"status": "ignored"})
    assert await hooked.post(foreign, signed(foreign)) == (200, {"status": "ignored"})
    assert await hooked.keys() == []


async def test_webhook_does_not_replace_the_agents_record(hooked: Hooked) -> None:
    """After the agent's own hand-over, `room_finished` adds neither a record nor a job."""
    async with PostCallSink.from_settings(hooked.settings) as sink:
        await sink.submit(sample_record("w2"))
    body = event_body(room="call-w2")
    assert await hooked.post(body, signed(body)) == (200, {"status": "duplicate"})
    kept = await hooked.queue.get_record("w2")
    assert kept is not None
    assert kept.source == "agent"
    assert kept.record.complete
    assert [j.job_id for j in await hooked.queue.redis.queued_jobs()] == ["call:w2"]


async def test_oversized_webhook_is_refused(hooked: Hooked) -> None:
    """A body over the webhook limit is 413 before any signature work."""
    body = b"{" + b" " * (webhooks.MAX_WEBHOOK_BYTES + 1) + b"}"
    status, error = await hooked.post(body, signed(body))
    assert status == 413
    assert error["error"] == "payload_too_large"


async def test_call_whose_agent_died_is_reported_from_its_journal(
    hooked: Hooked, tmp_path: Path
) -> None:
    """No hand-over, a journal cut short: the webhook's job reports the partial call."""
    journal = CallJournal(directory=tmp_path / "calls", call_id="w3", room="call-w3", user_id="u")
    journal.add_turn(
        TranscriptTurn(speaker="user", text="My router keeps rebooting.", started_at=1, ended_at=2)
    )  # ... and the agent process dies: no finish(), no hand-over
    body = event_body(room="call-w3")
    assert await hooked.post(body, signed(body)) == (200, {"status": "enqueued"})
    async with ScriptedOpenAI(chat=[ChatReply(text=report_json())]) as models:
        settings = hooked.settings.model_copy(update={"openai_base_url": models.base_url})
        async with running_worker(settings, fast_options(settings)) as deps:
            call = await wait_for_status(deps.store, "w3", CallStatus.DONE)
    assert call.source == "webhook"
    assert [t.text for t in call.record.transcript] == ["My router keeps rebooting."]
    assert call.report is not None
    assert call.report.review_reasons == ["partial_record"]


async def test_room_finished_continues_the_calls_trace_into_the_record(hooked: Hooked) -> None:
    """With tracing on, the webhook's span continues the traceparent in the room's metadata,
    and the record it stores hands that trace on to the post-call job."""
    mint = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = json.dumps({"call_id": "w1", "traceparent": mint})
    body = event_body(metadata=metadata)
    with recorded_spans() as spans:
        status, _ = await hooked.post(body, signed(body))
    assert status == 200
    [span] = [s for s in spans.get_finished_spans() if s.name == "webhook.room_finished"]
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == mint.split("-")[2]
    queued = await hooked.queue.get_record("w1")
    assert queued is not None
    assert queued.record.traceparent is not None
    _, trace_id, span_id, _ = queued.record.traceparent.split("-")
    assert (trace_id, span_id) == (mint.split("-")[1], f"{span.context.span_id:016x}")
