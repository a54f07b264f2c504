"""Post-call side effects: the ticket through the example tool, the signed webhook, the draft."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.report_samples import sample_report
from voice_agent.exceptions import IntegrationError
from voice_agent.postcall.integrations import (
    EmailDraftIntegration,
    IntegrationJob,
    TicketIntegration,
    WebhookIntegration,
    idempotency_key,
    sign,
)
from voice_agent.postcall.models import StoredReport, TicketFields
from voice_agent.tooling.registry import ToolRegistry

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _job(stored: StoredReport | None = None, call_id: str = "i1") -> IntegrationJob:
    return IntegrationJob(
        call_id=call_id,
        user_id="customer-42",
        stored=stored or sample_report(),
        idempotency_key=idempotency_key(call_id, "ticket"),
    )


def _ticket(tmp_path: Path) -> TicketIntegration:
    spec = ToolRegistry.load(TOOLS).get("create_ticket")
    assert spec is not None
    return TicketIntegration(spec=spec, data_dir=tmp_path, timeout_s=5.0)


def _rows(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "tickets.sqlite3") as db:
        return db.execute("SELECT title, call_id FROM tickets").fetchall()


async def test_ticket_is_created_once_per_idempotency_key(tmp_path: Path) -> None:
    """Running the ticket integration twice under one key leaves one ticket, same id."""
    ticket = _ticket(tmp_path)
    first = await ticket.run(_job())
    second = await ticket.run(_job())
    assert first["ticket_id"] == second["ticket_id"]
    assert len(_rows(tmp_path)) == 1
    assert _rows(tmp_path)[0][1] == "i1"


async def test_ticket_fields_are_fitted_to_the_tool(tmp_path: Path) -> None:
    """A report title longer than the tool takes is clipped; a too-short one gets the call id."""
    stored = sample_report()
    long = stored.model_copy(deep=True)
    long.report.ticket = TicketFields(
        title="T" * 200, priority="urgent", category="x", description="Something broke."
    )
    short = stored.model_copy(deep=True)
    short.report.ticket = TicketFields(
        title="No", priority="low", category="x", description="Something broke."
    )
    ticket = _ticket(tmp_path)
    clipped = ticket.arguments(_job(long))
    padded = ticket.arguments(_job(short))
    assert len(clipped["title"]) == 120
    assert clipped["priority"] == "urgent"
    assert "category" not in clipped  # the tool does not take it
    assert padded["title"] == "Call i1: No"
    await ticket.run(_job(long))  # and the tool accepts them


async def test_ticket_tool_failure_is_an_integration_error(tmp_path: Path) -> None:
    """A tool that raises (here: its data dir is a file) becomes a retryable IntegrationError."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    spec = ToolRegistry.load(TOOLS).get("create_ticket")
    assert spec is not None
    with pytest.raises(IntegrationError) as caught:
        await TicketIntegration(spec=spec, data_dir=blocked, timeout_s=5.0).run(_job())
    assert caught.value.retryable


@pytest.fixture
async def hook() -> AsyncIterator[tuple[list[web.Request | bytes], str, list[int]]]:
    seen: list[web.Request | bytes] = []
    statuses = [200]

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        seen.append(await request.read())
        return web.json_response({}, status=statuses[0])

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield seen, str(server.make_url("/hook")), statuses
    finally:
        await server.close()


async def test_webhook_is_signed_over_timestamp_and_body(
    hook: tuple[list[web.Request | bytes], str, list[int]],
) -> None:
    """The receiver can verify HMAC-SHA256("<ts>.<body>") and sees the idempotency key."""
    seen, url, _ = hook
    async with aiohttp.ClientSession() as session:
        integration = WebhookIntegration(url=url, secret="s3cret-s3cret", session=session)
        result = await integration.run(_job())
    request, body = seen
    assert isinstance(request, web.Request)
    assert isinstance(body, bytes)
    ts = request.headers["X-Voice-Agent-Timestamp"]
    mac = hmac.new(b"s3cret-s3cret", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert request.headers["X-Voice-Agent-Signature"] == f"v1={mac}"
    assert request.headers["Idempotency-Key"] == "postcall:i1:ticket"
    assert json.loads(body)["report"]["summary"].startswith("Customer was charged twice")
    assert result == {"status": 200}


async def test_webhook_error_status_is_an_integration_error(
    hook: tuple[list[web.Request | bytes], str, list[int]],
) -> None:
    """Any answer but 2xx fails the integration."""
    _, url, statuses = hook
    statuses[0] = 502
    async with aiohttp.ClientSession() as session:
        integration = WebhookIntegration(url=url, secret="s3cret-s3cret", session=session)
        with pytest.raises(IntegrationError, match="HTTP 502"):
            await integration.run(_job())


async def test_unreachable_webhook_is_an_integration_error() -> None:
    """A connection refused fails the integration (and is retried by the job)."""
    async with aiohttp.ClientSession() as session:
        integration = WebhookIntegration(
            url="http://127.0.0.1:9/hook", secret="s3cret-s3cret", session=session, timeout_s=2
        )
        with pytest.raises(IntegrationError, match="unreachable"):
            await integration.run(_job())


def test_signature_changes_with_every_input() -> None:
    """Secret, timestamp and body each change the signature."""
    base = sign("secret", 100, b"{}")
    assert base.startswith("v1=")
    assert (
        len(
            {
                base,
                sign("other", 100, b"{}"),
                sign("secret", 101, b"{}"),
                sign("secret", 100, b"[]"),
            }
        )
        == 4
    )


async def test_email_draft_is_kept_unsent() -> None:
    """The email draft integration stores the draft, marked as not sent."""
    result = await EmailDraftIntegration().run(_job())
    assert result["sent"] is False
    assert result["to"] == "customer-42"
    assert result["subject"]
