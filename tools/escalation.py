"""Hand the call over to a person: record an escalation and say what happens next.

Requests go to `<data_dir>/escalations.sqlite3` (standing in for a paging or callback system);
the idempotency key is UNIQUE there, so a repeated request returns the same reference.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from voice_agent.tooling import ToolContext, tool

ESCALATIONS_FILE = "escalations.sqlite3"

Urgency = Literal["normal", "urgent"]

_NEXT_STEP: dict[str, str] = {
    "normal": "A support engineer will call the user back within 2 business hours.",
    "urgent": "The on-call engineer has been paged and will call the user back within 30 minutes.",
}


def record_escalation(
    data_dir: Path,
    *,
    idempotency_key: str,
    reason: str,
    urgency: Urgency,
    call_id: str,
    user_id: str | None,
) -> str:
    """Store the request (once per key); its reference, e.g. "ESC-000007"."""
    data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(data_dir / ESCALATIONS_FILE, timeout=10.0, isolation_level=None)
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS escalations (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "idempotency_key TEXT NOT NULL UNIQUE, reason TEXT NOT NULL, urgency TEXT NOT NULL, "
            "call_id TEXT, user_id TEXT, created_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO escalations (idempotency_key, reason, urgency, call_id, user_id, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
            (idempotency_key, reason, urgency, call_id, user_id, time.time()),
        )
        (number,) = db.execute(
            "SELECT id FROM escalations WHERE idempotency_key = ?", (idempotency_key,)
        ).fetchone()
    finally:
        db.close()
    return f"ESC-{number:06d}"


@tool(timeout=3.0, fallback="call the support line directly on 0800 555 0100")
async def escalate_to_human(
    ctx: ToolContext,
    *,
    reason: Annotated[str, Field(min_length=5, max_length=500)],
    urgency: Urgency = "normal",
) -> dict[str, Any]:
    """Ask a human support engineer to take over, when the user asks for a person or the problem
    needs one. Tell the user the reference and what happens next.

    Args:
        reason: What the user needs help with, in a sentence or two, for the engineer.
        urgency: "urgent" only when the user cannot work at all or a service is down for many
            people; otherwise "normal".
    """
    reference = await asyncio.to_thread(
        lambda: record_escalation(
            ctx.data_dir,
            idempotency_key=ctx.idempotency_key,
            reason=reason,
            urgency=urgency,
            call_id=ctx.call_id,
            user_id=ctx.user_id,
        )
    )
    ctx.log.info("escalation.recorded", reference=reference, urgency=urgency)
    return {"reference": reference, "urgency": urgency, "next_step": _NEXT_STEP[urgency]}
