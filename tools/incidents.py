"""Incident status lookups from the bundled status data (`data/incidents.json`).

Stands in for a status-page API: the file is read on every lookup, so edits show at once.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter

from voice_agent.tooling import ToolContext, tool

DATA = Path(__file__).parent / "data" / "incidents.json"

_FALLBACK = "the public status page at status.example.com"


class Incident(BaseModel):
    """One incident as the status data records it."""

    id: str
    title: str
    status: Literal["investigating", "identified", "monitoring", "resolved"]
    severity: Literal["minor", "major", "critical"]
    services: list[str]
    started_at: str
    updated_at: str
    summary: str
    workaround: str | None = None
    next_update: str | None = None


_INCIDENTS = TypeAdapter(list[Incident])


async def _load() -> list[Incident]:
    return _INCIDENTS.validate_json(await asyncio.to_thread(DATA.read_bytes))


def _normalise(incident_id: str) -> str:
    digits = re.sub(r"\D", "", incident_id)
    return f"INC-{digits}" if digits else incident_id.strip().upper()


def _brief(incident: Incident) -> dict[str, Any]:
    return incident.model_dump(exclude={"started_at"})


@tool(timeout=2.0, fallback=_FALLBACK)
async def get_incident_status(
    ctx: ToolContext,
    *,
    incident_id: Annotated[str, Field(min_length=1, max_length=20)],
) -> dict[str, Any]:
    """Look up the current status of an incident by its id, such as INC-1042.

    Args:
        incident_id: The incident id, e.g. "INC-1042"; the number alone also works.
    """
    wanted = _normalise(incident_id)
    for incident in await _load():
        if incident.id == wanted:
            ctx.log.info("incidents.found", incident_id=wanted, status=incident.status)
            return {"found": True, "incident": _brief(incident)}
    return {
        "found": False,
        "incident_id": wanted,
        "message": f"There is no incident {wanted}. Ask the user to check the number, or list "
        "the open incidents.",
    }


@tool(timeout=2.0, fallback=_FALLBACK)
async def list_open_incidents(
    ctx: ToolContext,
    *,
    service: Annotated[str | None, Field(max_length=40)] = None,
) -> dict[str, Any]:
    """List the incidents that are not yet resolved, optionally only those affecting a service.

    Args:
        service: A service name such as "email", "vpn", "billing" or "reporting"; omit for all.
    """
    wanted = service.strip().lower() if service else None
    open_incidents = [
        _brief(i)
        for i in await _load()
        if i.status != "resolved" and (wanted is None or wanted in i.services)
    ]
    return {"count": len(open_incidents), "incidents": open_incidents}
