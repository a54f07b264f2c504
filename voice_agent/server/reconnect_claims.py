"""The app's `reconnect_of`: a caller's claim that a call continues an earlier one, checked here.

The web client, after losing a call, starts a new one and tells the agent which room it lost
(`context.data.reconnect_of`); the agent records that as a `reconnect_claimed` event, never as a
fact, since any app can send any room name. Staff see the link only once it is verified against
the store, the durable truth: the claimed call exists, is not this call, started earlier, and
belongs to the same authenticated user (anonymous callers get a new identity per call, so their
claims stay unverified). Verified at read time, a claim turns verified as soon as the earlier
call reaches the store.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from voice_agent.call_record import CallRecord
from voice_agent.postcall.models import CallDetail
from voice_agent.postcall.queue import valid_call_id
from voice_agent.postcall.store import ReportStore

ROOM_PREFIX = "call-"
CLAIM_EVENTS = ("reconnect_claimed", "reconnect_of")  # the second: records from before the rename
MAX_CLAIMS = 4  # the app sends one; more are not looked up

ClaimCheck = Literal["same_caller", "unknown_call", "other_caller", "not_earlier", "same_call"]


class ReconnectClaim(BaseModel):
    """One claim and what the store says about it."""

    claimed_room: str
    claimed_call_id: str | None
    verified: bool
    check: ClaimCheck


def claimed_rooms(record: CallRecord) -> list[str]:
    """The rooms the app said this call reconnects, in order, each once."""
    rooms: list[str] = []
    for event in record.events:
        if event.event not in CLAIM_EVENTS:
            continue
        room = event.data.get("claimed_room", event.data.get("previous_room"))
        if isinstance(room, str) and room not in rooms:
            rooms.append(room)
    return rooms[:MAX_CLAIMS]


async def verify_claims(store: ReportStore, call: CallDetail) -> list[ReconnectClaim]:
    """Each reconnect claim of `call`, verified against the store."""
    claims = []
    for room in claimed_rooms(call.record):
        call_id = room.removeprefix(ROOM_PREFIX) if room.startswith(ROOM_PREFIX) else None
        if call_id is None or not valid_call_id(call_id):
            claims.append(_claim(room, None, "unknown_call"))
            continue
        if call_id == call.call_id:
            claims.append(_claim(room, call_id, "same_call"))
            continue
        earlier = await store.get_call(call_id)
        if earlier is None:
            check: ClaimCheck = "unknown_call"
        elif earlier.user_id is None or earlier.user_id != call.user_id:
            check = "other_caller"
        elif earlier.started_at >= call.started_at:
            check = "not_earlier"
        else:
            check = "same_caller"
        claims.append(_claim(room, call_id, check))
    return claims


def _claim(room: str, call_id: str | None, check: ClaimCheck) -> ReconnectClaim:
    return ReconnectClaim(
        claimed_room=room,
        claimed_call_id=call_id,
        verified=check == "same_caller",
        check=check,
    )
