"""`POST /webhooks/livekit`: LiveKit's signed events; `room_finished` is the post-call safety net.

The agent hands every call over itself. When it cannot (it crashed, or lost its host), LiveKit's
`room_finished` for the room `call-<call_id>` still arrives here: if Redis holds no record of the
call yet, the best one this host has is stored (the spool file the agent left, else its journal
replayed, else a minimal partial record) and `process_call` is enqueued under the call's one job
id, deferred by a grace period so an agent hand-over in flight wins. Duplicate deliveries and the
agent's own hand-over all share that job id: the call is processed once.

The signature is checked by livekit-api's `WebhookReceiver` (a JWT signed with our API secret
whose `sha256` claim is the body's hash) before anything is parsed or stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from google.protobuf import json_format
from livekit import api
from redis.exceptions import RedisError

from voice_agent import tracing
from voice_agent.call_record import CallJournal, CallRecord
from voice_agent.logging import bound_contextvars, get_logger
from voice_agent.postcall.handover import spool_for
from voice_agent.postcall.queue import PostCallQueue, connect, valid_call_id
from voice_agent.postcall.spool import RecordSpool
from voice_agent.server.errors import error_response
from voice_agent.settings import Settings

log = get_logger("webhooks")

ROOM_PREFIX = "call-"
MAX_WEBHOOK_BYTES = 64 * 1024
DEFAULT_HANDOVER_GRACE_S = 15.0


@dataclass(frozen=True, kw_only=True)
class WebhookOptions:
    """What the webhook needs besides the queue."""

    receiver: api.WebhookReceiver
    spool: RecordSpool
    journal_dir: Path
    handover_grace_s: float = DEFAULT_HANDOVER_GRACE_S


WEBHOOK_OPTIONS = web.AppKey("webhook_options", WebhookOptions)
POSTCALL_QUEUE = web.AppKey("postcall_queue", PostCallQueue)


def postcall_queue_context(
    settings: Settings,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context owning the app's connection to the post-call queue (when configured)."""

    async def postcall_queue(app: web.Application) -> AsyncIterator[None]:
        if not settings.redis_url:
            yield
            return
        queue = PostCallQueue(redis=connect(settings.redis_url))
        app[POSTCALL_QUEUE] = queue
        try:
            yield
        finally:
            await queue.aclose()

    return postcall_queue


def webhook_options(
    settings: Settings, *, handover_grace_s: float = DEFAULT_HANDOVER_GRACE_S
) -> WebhookOptions:
    """The receiver for our LiveKit key pair, and where this host keeps records."""
    key, secret = settings.livekit_credentials()
    return WebhookOptions(
        receiver=api.WebhookReceiver(api.TokenVerifier(key, secret)),
        spool=spool_for(settings),
        journal_dir=settings.data_dir / "calls",
        handover_grace_s=handover_grace_s,
    )


async def _read_body(request: web.Request) -> bytes | None:
    """The raw body, or None when it is larger than `MAX_WEBHOOK_BYTES`."""
    if (request.content_length or 0) > MAX_WEBHOOK_BYTES:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(16 * 1024):
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _auth_token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "").strip()
    if value[:7].lower() == "bearer ":  # LiveKit sends the bare JWT; accept the Bearer form too
        value = value[7:].strip()
    return value or None


def best_record(options: WebhookOptions, call_id: str, room: str, created_at: float) -> CallRecord:
    """This host's best record of a call: the spool, else the journal replayed, else minimal."""
    spooled = options.spool.read(call_id)
    if spooled is not None:
        return spooled
    journal = options.journal_dir / f"{call_id}.jsonl"
    if journal.is_file():
        try:
            return CallJournal.replay(journal)
        except (OSError, ValueError) as e:
            log.warning("webhook.journal_unreadable", call_id=call_id, error=str(e)[:300])
    now = time.time()
    return CallRecord(
        call_id=call_id,
        room=room,
        started_at=created_at or now,
        ended_at=now,
        end_reason="room_finished_without_handover",
        complete=False,
    )


async def livekit_webhook(request: web.Request) -> web.Response:
    """POST /webhooks/livekit: verify, then enqueue the post-call job on `room_finished`."""
    options = request.app[WEBHOOK_OPTIONS]
    body = await _read_body(request)
    if body is None:
        return error_response(413, "payload_too_large", f"at most {MAX_WEBHOOK_BYTES} bytes")
    token = _auth_token(request)
    if token is None:
        log.warning("webhook.rejected", reason="missing authorization")
        return error_response(401, "unauthorized", "missing webhook signature")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        log.warning("webhook.rejected", reason="body not UTF-8")
        return error_response(400, "bad_request", "a webhook body is UTF-8 JSON")
    try:
        event = options.receiver.receive(text, token)
    except json_format.ParseError as e:  # signed (the hash matched), but not a webhook event
        log.warning("webhook.rejected", reason="not a webhook event", error=str(e)[:200])
        return error_response(400, "bad_request", "the body is not a LiveKit webhook event")
    except Exception as e:  # noqa: BLE001 - livekit-api raises plain Exceptions (and jwt errors)
        log.warning("webhook.rejected", reason=type(e).__name__)
        return error_response(401, "unauthorized", "invalid webhook signature")
    if event.event != "room_finished":
        log.debug("webhook.ignored", webhook_event=event.event, room=event.room.name or None)
        return web.json_response({"status": "ignored"})
    room = event.room.name
    call_id = room.removeprefix(ROOM_PREFIX)
    if not room.startswith(ROOM_PREFIX) or not valid_call_id(call_id):
        log.info("webhook.foreign_room", room=room[:140])
        return web.json_response({"status": "ignored"})
    with (
        bound_contextvars(call_id=call_id),
        tracing.span(
            "webhook.room_finished",
            parent=_traceparent_of(event.room.metadata),
            kind=tracing.SpanKind.SERVER,
        ),
    ):
        return await _room_finished(
            request, options, call_id, room, float(event.room.creation_time)
        )


def _traceparent_of(room_metadata: str) -> str | None:
    """The call's traceparent from the room's metadata (the token's call metadata), if valid."""
    try:
        value = json.loads(room_metadata) if room_metadata else None
    except ValueError:
        return None
    return tracing.valid_traceparent(value.get("traceparent")) if isinstance(value, dict) else None


async def _room_finished(
    request: web.Request, options: WebhookOptions, call_id: str, room: str, created_at: float
) -> web.Response:
    queue = request.app.get(POSTCALL_QUEUE)
    if queue is None:
        log.warning("webhook.no_queue", reason="REDIS_URL is not set")
        return error_response(503, "unavailable", "the post-call queue is not configured")
    try:
        stored = False
        if not await queue.has_record(call_id):
            record = await asyncio.to_thread(best_record, options, call_id, room, created_at)
            if record.traceparent is None:  # no worker span to follow: the job continues this one
                record = record.model_copy(update={"traceparent": tracing.traceparent()})
            stored = await queue.put_record_if_absent(record, source="webhook")
            log.info(
                "webhook.record_stored" if stored else "webhook.record_present",
                complete=record.complete,
                turns=len(record.transcript),
            )
        enqueued = await queue.enqueue(call_id, defer_s=options.handover_grace_s)
    except (RedisError, OSError) as e:
        log.error("webhook.queue_failed", error=f"{type(e).__name__}: {e}"[:300])
        return error_response(503, "unavailable", "the post-call queue did not answer")
    log.info(
        "webhook.room_finished",
        enqueued=enqueued,
        record_stored=stored,
        defer_s=options.handover_grace_s,
    )
    return web.json_response({"status": "enqueued" if enqueued else "duplicate"})
