"""Support tickets in the local ticket store (`voice_agent.tooling.tickets.TicketStore`).

`create_ticket` is destructive (the user confirms it) and idempotent: the store keeps the
idempotency key UNIQUE, so a repeat of the same request returns the same ticket.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from pydantic import Field

from voice_agent.tooling import ToolContext, tool
from voice_agent.tooling.tickets import Priority, TicketStore


@tool(
    destructive=True,
    timeout=3.0,
    confirm="Open a {priority} priority support ticket titled '{title}'?",
    fallback="email support@example.com and the team will open the ticket by hand",
)
async def create_ticket(
    ctx: ToolContext,
    *,
    title: Annotated[str, Field(min_length=3, max_length=120)],
    description: Annotated[str, Field(min_length=3, max_length=2000)],
    priority: Priority = "normal",
) -> dict[str, Any]:
    """Open a support ticket for a problem the user wants the support team to handle.

    Args:
        title: A short summary of the problem, in a few words.
        description: What happened, what the user tried, and anything they asked for.
        priority: How urgent it is: low, normal, high, or urgent (a service is down for them).
    """
    store = TicketStore.in_data_dir(ctx.data_dir)
    ticket, created = await asyncio.to_thread(
        lambda: store.create(
            idempotency_key=ctx.idempotency_key,
            title=title,
            description=description,
            priority=priority,
            call_id=ctx.call_id,
            user_id=ctx.user_id,
        )
    )
    ctx.log.info("tickets.created" if created else "tickets.existing", ticket_id=ticket.ticket_id)
    return {
        "ticket_id": ticket.ticket_id,
        "title": ticket.title,
        "priority": ticket.priority,
        "status": ticket.status,
        "next_step": "The support team reviews new tickets within one business day and replies "
        "by email.",
    }
