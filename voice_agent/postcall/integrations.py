"""The post-call side effects: a ticket, a signed outbound webhook, the stored email draft.

Each runs under an idempotency key, `postcall:<call_id>:<name>`. The job looks the key up in the
store first and skips a side effect that already succeeded; the key also travels with the side
effect (the ticket tool stores it with the ticket, the webhook sends it as `Idempotency-Key`), so
a worker killed between doing the thing and recording it does not do it twice.

The outbound webhook is signed like Stripe's and Slack's: `X-Voice-Agent-Signature:
v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` with the timestamp in
`X-Voice-Agent-Timestamp`, so the receiver can check origin, integrity and freshness.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from voice_agent import tracing
from voice_agent.exceptions import IntegrationError
from voice_agent.logging import get_logger
from voice_agent.postcall.models import IntegrationResult, StoredReport
from voice_agent.postcall.store import ReportStore
from voice_agent.tooling.context import ToolContext
from voice_agent.tooling.spec import ToolSpec

log = get_logger("postcall.integrations")

TICKET_TOOL = "create_ticket"
SIGNATURE_HEADER = "X-Voice-Agent-Signature"
TIMESTAMP_HEADER = "X-Voice-Agent-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def idempotency_key(call_id: str, name: str) -> str:
    """The key one side effect of one call runs under."""
    return f"postcall:{call_id}:{name}"


@dataclass(frozen=True, kw_only=True)
class IntegrationJob:
    """What a side effect is given: the call, its report and the key to run under."""

    call_id: str
    user_id: str | None
    stored: StoredReport
    idempotency_key: str


class Integration(Protocol):
    """One post-call side effect."""

    name: str

    async def run(self, job: IntegrationJob) -> dict[str, Any]:
        """Do it (idempotently under `job.idempotency_key`); what it produced, as JSON.

        Raises `IntegrationError` when it failed.
        """
        ...


class TicketIntegration:
    """Creates the call's ticket through the registered `create_ticket` tool."""

    name = "ticket"

    def __init__(self, *, spec: ToolSpec, data_dir: Path, timeout_s: float) -> None:
        self._spec = spec
        self._data_dir = data_dir
        self._timeout_s = timeout_s

    def arguments(self, job: IntegrationJob) -> dict[str, Any]:
        """The report's ticket fields the tool takes, fitted to its declared lengths.

        The report allows longer text than a ticket system may (the example tool takes titles
        up to 120 characters): a value that would fail the tool's validation forever is clipped
        (too long) or prefixed with the call id (too short) rather than dead-lettering the call.
        """
        properties: dict[str, Any] = self._spec.parameters.get("properties", {})
        ticket = job.stored.report.ticket.model_dump(mode="json")
        if "call_id" in properties:
            ticket["call_id"] = job.call_id
        args: dict[str, Any] = {}
        for name, value in ticket.items():
            if name not in properties:
                continue
            schema = properties[name]
            if isinstance(value, str):
                shortest, longest = schema.get("minLength"), schema.get("maxLength")
                if isinstance(shortest, int) and len(value) < shortest:
                    value = f"Call {job.call_id}: {value}"
                if isinstance(longest, int) and len(value) > longest:
                    value = value[: longest - 1].rstrip() + "…"
            args[name] = value
        return args

    async def run(self, job: IntegrationJob) -> dict[str, Any]:
        """Invoke the tool with the report's ticket fields under the job's idempotency key."""
        ctx = ToolContext(
            call_id=job.call_id,
            user_id=job.user_id,
            app_context={},
            log=log.bind(call_id=job.call_id, tool=self._spec.name),
            idempotency_key=job.idempotency_key,
            data_dir=self._data_dir,
        )
        try:
            result = await self._spec.invoke(self.arguments(job), ctx, timeout_s=self._timeout_s)
        except TimeoutError as e:
            raise IntegrationError(
                f"{self._spec.name} timed out after {self._timeout_s:g} s"
            ) from e
        except Exception as e:  # any failure of developer code is this side effect failing
            raise IntegrationError(f"{self._spec.name} failed: {type(e).__name__}: {e}") from e
        return result if isinstance(result, dict) else {"result": result}


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def webhook_body(job: IntegrationJob) -> bytes:
    """The JSON the outbound webhook posts."""
    stored = job.stored
    payload = {
        "type": "postcall.report",
        "v": 1,
        "call_id": job.call_id,
        "user_id": job.user_id,
        "needs_review": stored.needs_review,
        "review_reasons": stored.review_reasons,
        "model": stored.model,
        "report": stored.report.model_dump(mode="json"),
    }
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookIntegration:
    """POSTs the report to `VOICE_AGENT_POSTCALL_WEBHOOK_URL`, signed, with the idempotency key."""

    name = "webhook"

    def __init__(
        self, *, url: str, secret: str, session: aiohttp.ClientSession, timeout_s: float = 10.0
    ) -> None:
        self._url = url
        self._secret = secret
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def run(self, job: IntegrationJob) -> dict[str, Any]:
        """Send the signed report; any answer but 2xx is a failure."""
        body = webhook_body(job)
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            IDEMPOTENCY_HEADER: job.idempotency_key,
        }
        if (parent := tracing.traceparent()) is not None:  # the receiver may continue the trace
            headers["traceparent"] = parent
        try:
            async with self._session.post(
                self._url, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                status = resp.status
                await resp.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise IntegrationError(f"webhook unreachable: {type(e).__name__}: {e}"[:500]) from e
        if not 200 <= status < 300:
            raise IntegrationError(f"webhook answered HTTP {status}")
        return {"status": status}


class EmailDraftIntegration:
    """Keeps the follow-up email as a draft for staff; it is never sent."""

    name = "email_draft"

    async def run(self, job: IntegrationJob) -> dict[str, Any]:
        """The draft, marked unsent."""
        draft = job.stored.report.email_draft
        return {"to": job.user_id, "subject": draft.subject, "body": draft.body, "sent": False}


async def run_integration(
    store: ReportStore, integration: Integration, job: IntegrationJob
) -> bool:
    """Run one side effect unless its key already succeeded; record the outcome; True when ok."""
    done = await store.get_integration(job.idempotency_key)
    if done is not None and done.ok:
        await store.add_job_event(job.call_id, "integration_skipped", integration=integration.name)
        return True
    try:
        produced = await integration.run(job)
    except IntegrationError as e:
        error = str(e)[:1000]
        await store.save_integration(
            job.call_id,
            IntegrationResult(
                name=integration.name,
                idempotency_key=job.idempotency_key,
                ok=False,
                error=error,
                at=time.time(),
            ),
        )
        await store.add_job_event(
            job.call_id, "integration_failed", integration=integration.name, error=error
        )
        log.warning(
            "postcall.integration_failed",
            call_id=job.call_id,
            integration=integration.name,
            error=error,
        )
        return False
    await store.save_integration(
        job.call_id,
        IntegrationResult(
            name=integration.name,
            idempotency_key=job.idempotency_key,
            ok=True,
            result=produced,
            at=time.time(),
        ),
    )
    await store.add_job_event(job.call_id, "integration_ok", integration=integration.name)
    log.info("postcall.integration_ok", call_id=job.call_id, integration=integration.name)
    return True
