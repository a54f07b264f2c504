"""Tracing: spans carry call_id, traceparents cross processes checked, nothing happens when off.

Spans go to the SDK's own in-memory exporter (a real `TracerProvider`, no collector).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from livekit import api
from livekit.protocol import agent as agent_pb
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tests.helpers import TEST_API_KEY, TEST_API_SECRET, make_settings, recorded_spans
from tests.report_samples import sample_report
from voice_agent import tracing
from voice_agent.agent.job import job_context_from_assignment
from voice_agent.call_record import CallJournal, CallRecord
from voice_agent.logging import bound_contextvars
from voice_agent.postcall.integrations import IntegrationJob, WebhookIntegration
from voice_agent.server.auth import Caller
from voice_agent.server.tokens import VoiceTokenMinter

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for the test, into memory; off again after it."""
    with recorded_spans() as exporter:
        yield exporter


def _one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


@pytest.mark.parametrize(
    "value",
    [
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # another version
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # no trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # no span id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        PARENT + "-extra",
        PARENT[:-1],
        "",
        42,
        None,
        {"traceparent": PARENT},
    ],
)
def test_malformed_traceparents_are_refused(value: object) -> None:
    """Only a version-00 traceparent with non-zero lower-case ids passes the check."""
    assert tracing.valid_traceparent(value) is None


def test_a_well_formed_traceparent_passes() -> None:
    """The W3C example traceparent is accepted as it is."""
    assert tracing.valid_traceparent(PARENT) == PARENT


def test_spans_are_no_ops_when_tracing_is_off() -> None:
    """Off (the default): a span records nothing and there is no traceparent to hand on."""
    assert not tracing.enabled()
    with tracing.span("call", call_id="c1") as span:
        assert not span.is_recording()
        assert tracing.traceparent() is None


def test_a_span_takes_call_id_from_the_log_context(spans: InMemorySpanExporter) -> None:
    """A span opened while a call is bound to the log context carries that call_id."""
    with bound_contextvars(call_id="call-from-context"), tracing.span("stt"):
        pass
    assert _one(spans, "stt").attributes == {"call_id": "call-from-context"}


def test_a_span_continues_the_trace_of_a_traceparent(spans: InMemorySpanExporter) -> None:
    """Given another process's traceparent, the span joins its trace under its span."""
    with tracing.span("call", parent=PARENT, call_id="c1"):
        pass
    call = _one(spans, "call")
    assert call.parent is not None
    assert call.parent.is_remote
    assert f"{call.context.trace_id:032x}" == PARENT.split("-")[1]
    assert f"{call.parent.span_id:016x}" == PARENT.split("-")[2]


def test_a_malformed_traceparent_starts_a_new_trace(spans: InMemorySpanExporter) -> None:
    """A parent that fails the check is ignored: the span is a root of its own trace."""
    with tracing.span("call", parent="00-not-a-trace", call_id="c1"):
        pass
    assert _one(spans, "call").parent is None


def test_the_current_span_is_handed_on_as_its_traceparent(spans: InMemorySpanExporter) -> None:
    """`traceparent()` inside a span names that span, with its sampled flag set."""
    with tracing.span("token.mint", call_id="c1"):
        handed = tracing.traceparent()
    mint = _one(spans, "token.mint")
    assert handed is not None
    _version, trace_id, span_id, flags = handed.split("-")
    assert (trace_id, span_id) == (f"{mint.context.trace_id:032x}", f"{mint.context.span_id:016x}")
    assert int(flags, 16) & 0x01  # sampled (the SDK also sets W3C's "random" bit, 0x02)


def test_a_failing_block_marks_its_span_failed(spans: InMemorySpanExporter) -> None:
    """An exception leaving the block sets the span's status to error and propagates."""
    with pytest.raises(ValueError, match="bad"), tracing.span("llm", call_id="c1"):
        raise ValueError("bad")
    assert _one(spans, "llm").status.status_code is StatusCode.ERROR


async def test_a_cancelled_block_is_no_failure(spans: InMemorySpanExporter) -> None:
    """A cancellation (a barge-in, a call ending) ends the span marked cancelled, not failed."""
    started = asyncio.Event()

    async def speak() -> None:
        with tracing.span("tts", call_id="c1"):
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(speak())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    tts = _one(spans, "tts")
    assert tts.status.status_code is StatusCode.UNSET
    assert tts.attributes is not None
    assert tts.attributes["cancelled"] is True


def test_a_recorded_stage_spans_its_monotonic_stamps(spans: InMemorySpanExporter) -> None:
    """`record` makes a finished child of the current span lasting from `start` to `end`."""
    now = time.monotonic()
    with tracing.span("turn", call_id="c1"):
        tracing.record("end_of_turn", start=now - 0.5, end=now - 0.2)
    stage, turn = _one(spans, "end_of_turn"), _one(spans, "turn")
    assert stage.parent is not None
    assert stage.parent.span_id == turn.context.span_id
    assert stage.start_time is not None
    assert stage.end_time is not None
    assert abs((stage.end_time - stage.start_time) / 1e9 - 0.3) < 0.01
    assert stage.attributes == {"call_id": "c1"}


def test_the_minted_token_carries_the_mint_span_as_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    """The dispatch metadata in a minted token names the `token.mint` span of its call."""
    grant = VoiceTokenMinter(make_settings()).mint(Caller(identity="u1", anonymous=True))
    claims = api.TokenVerifier(TEST_API_KEY, TEST_API_SECRET).verify(grant.token)
    assert claims.room_config is not None
    metadata = json.loads(claims.room_config.agents[0].metadata)
    mint = _one(spans, "token.mint")
    assert mint.attributes == {"call_id": grant.call_id}
    assert metadata["call_id"] == grant.call_id
    assert metadata["traceparent"].split("-")[2] == f"{mint.context.span_id:016x}"


def test_no_traceparent_is_minted_when_tracing_is_off() -> None:
    """Off, the dispatch metadata is the call's ids and nothing else."""
    grant = VoiceTokenMinter(make_settings()).mint(Caller(identity="u1", anonymous=True))
    claims = api.TokenVerifier(TEST_API_KEY, TEST_API_SECRET).verify(grant.token)
    assert claims.room_config is not None
    metadata = json.loads(claims.room_config.agents[0].metadata)
    assert set(metadata) == {"call_id", "user_id", "anonymous"}


def _assignment(metadata: str) -> agent_pb.JobAssignment:
    job = agent_pb.Job(id="AJ_1", metadata=metadata)
    job.room.name = "call-c1"
    return agent_pb.JobAssignment(job=job, token="t")


def test_the_job_keeps_a_valid_traceparent_from_its_metadata() -> None:
    """A dispatch whose metadata carries a valid traceparent hands it to the call."""
    metadata = json.dumps({"call_id": "c1", "traceparent": PARENT})
    job = job_context_from_assignment(_assignment(metadata), fallback_url="ws://x", identity="a")
    assert job.traceparent == PARENT


def test_the_job_drops_a_malformed_traceparent() -> None:
    """A traceparent in the metadata that fails the check is dropped; the call goes on."""
    metadata = json.dumps({"call_id": "c1", "traceparent": "00-evil-" + "x" * 500})
    job = job_context_from_assignment(_assignment(metadata), fallback_url="ws://x", identity="a")
    assert job.traceparent is None
    assert job.call_id == "c1"


def test_a_record_with_a_malformed_traceparent_is_kept_without_it() -> None:
    """A handed-over record whose traceparent is malformed loads, with the traceparent dropped."""
    raw = json.dumps({"call_id": "c1", "room": "call-c1", "started_at": 1.0, "traceparent": "x"})
    assert CallRecord.model_validate_json(raw).traceparent is None


def test_the_journal_keeps_the_call_span_for_a_recovered_record(tmp_path: Path) -> None:
    """A journal replayed after a crash still names the call's span, so post-call joins it."""
    journal = CallJournal(
        directory=tmp_path, call_id="c1", room="call-c1", user_id=None, traceparent=PARENT
    )
    assert CallJournal.replay(journal.path).traceparent == PARENT


async def test_the_report_webhook_carries_the_traceparent(spans: InMemorySpanExporter) -> None:
    """The outbound report webhook sends the current span as a `traceparent` header."""
    seen: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent"))
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            hook = WebhookIntegration(
                url=str(server.make_url("/hook")), secret="s3cret-s3cret", session=session
            )
            job = IntegrationJob(
                call_id="c1", user_id=None, stored=sample_report(), idempotency_key="k"
            )
            with tracing.span("integration webhook", call_id="c1"):
                await hook.run(job)
    finally:
        await server.close()
    sent = _one(spans, "integration webhook")
    [header] = seen
    assert header is not None
    assert header.split("-")[2] == f"{sent.context.span_id:016x}"
