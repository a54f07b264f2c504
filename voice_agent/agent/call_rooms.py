"""What the worker does to a call's room from outside it, through LiveKit's RoomService.

Closing the room once nobody is on the call keeps a caller from sitting in a room without an
agent: LiveKit dispatches our agent only when a room is created, so someone joining a room that
outlived its agent would wait for nobody. Closed, a later join with the same token creates a new
room, whose dispatch the call's claim refuses (`call_claims.py`), and `ROOM_DELETED` tells the
caller the call is over. Each operation opens its own short-lived API client: they run once or
twice a call, and a client per call leaves nothing to close when the worker stops.
"""

from __future__ import annotations

import contextlib

import aiohttp
from livekit import api

from voice_agent.logging import get_logger
from voice_agent.settings import Settings

log = get_logger("agent.rooms")

_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


def _http_url(url: str) -> str:
    return url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)


class CallRooms:
    """Room operations with the worker's LiveKit credentials."""

    def __init__(self, settings: Settings) -> None:
        self._url = _http_url(settings.livekit_url)
        self._key, self._secret = settings.livekit_credentials()

    def _client(self) -> api.LiveKitAPI:
        return api.LiveKitAPI(self._url, self._key, self._secret, timeout=_TIMEOUT)

    async def has_participant(self, room: str, identity: str, *, call_id: str) -> bool:
        """True when `identity` is in `room` now; False when LiveKit cannot say (logged)."""
        try:
            async with self._client() as lk:
                found = await lk.room.list_participants(api.ListParticipantsRequest(room=room))
        except (api.TwirpError, aiohttp.ClientError, TimeoutError) as e:
            log.warning("call.room_unreadable", call_id=call_id, room=room, error=str(e)[:300])
            return False
        return any(p.identity == identity for p in found.participants)

    async def remove(self, room: str, identities: list[str], *, call_id: str) -> None:
        """Disconnect `identities` from `room` (they see `PARTICIPANT_REMOVED`); one already
        gone is no error, a failure is logged."""
        try:
            async with self._client() as lk:
                for identity in identities:
                    with contextlib.suppress(api.TwirpError):  # already gone
                        await lk.room.remove_participant(
                            api.RoomParticipantIdentity(room=room, identity=identity)
                        )
        except (aiohttp.ClientError, TimeoutError) as e:
            log.warning("call.room_close_failed", call_id=call_id, room=room, error=str(e)[:300])

    async def close(self, room: str, *, call_id: str, reason: str) -> bool:
        """Delete `room`, disconnecting whoever is in it (`ROOM_DELETED`); False when it failed
        (logged: a room LiveKit cannot delete now still closes once it is empty)."""
        try:
            async with self._client() as lk:
                await lk.room.delete_room(api.DeleteRoomRequest(room=room))
        except (api.TwirpError, aiohttp.ClientError, TimeoutError) as e:
            if isinstance(e, api.TwirpError) and e.code == "not_found":
                return True  # already gone
            log.warning("call.room_close_failed", call_id=call_id, room=room, error=str(e)[:300])
            return False
        log.info("call.room_closed", call_id=call_id, room=room, reason=reason)
        return True
