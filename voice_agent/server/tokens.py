"""Minting short-lived LiveKit credentials for one call.

The grant is as narrow as a voice call allows: join exactly one server-generated room, publish the
microphone only (no camera, no screen share), publish data, subscribe. The token's
RoomConfiguration dispatches our agent by name, with the call's metadata.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from livekit import api

from voice_agent import tracing
from voice_agent.server.auth import Caller
from voice_agent.settings import Settings


def new_call_id() -> str:
    """A random, URL-safe call id (also the room name's suffix)."""
    return secrets.token_hex(8)


def room_for_call(call_id: str) -> str:
    """The LiveKit room name of a call."""
    return f"call-{call_id}"


@dataclass(frozen=True)
class VoiceToken:
    """What the browser gets: where to connect, with what, for how long. Nothing else."""

    rtc_url: str
    token: str
    expires_in: int
    room: str
    identity: str
    call_id: str

    def public_body(self) -> dict[str, str | int]:
        """The response body: exactly the fields the contract names."""
        return {
            "rtc_url": self.rtc_url,
            "token": self.token,
            "expires_in": self.expires_in,
            "room": self.room,
            "identity": self.identity,
        }


class VoiceTokenMinter:
    """Mints LiveKit access tokens for new calls."""

    def __init__(self, settings: Settings) -> None:
        self._api_key, self._api_secret = settings.livekit_credentials()
        self._ttl = settings.token_ttl_seconds
        self._agent_name = settings.agent_name
        self._rtc_url = settings.browser_rtc_url

    def mint(self, caller: Caller, *, display_name: str | None = None) -> VoiceToken:
        """A token for `caller` to join a brand-new call room with our agent dispatched into it.

        The call's trace starts here: the dispatch metadata carries this span's traceparent."""
        call_id = new_call_id()
        with tracing.span("token.mint", call_id=call_id, kind=tracing.SpanKind.SERVER):
            return self._mint(call_id, caller, display_name=display_name)

    def _mint(self, call_id: str, caller: Caller, *, display_name: str | None) -> VoiceToken:
        room = room_for_call(call_id)
        metadata: dict[str, str | bool] = {
            "call_id": call_id,
            "user_id": caller.identity,
            "anonymous": caller.anonymous,
        }
        if (parent := tracing.traceparent()) is not None:
            metadata["traceparent"] = parent
        call_metadata = json.dumps(metadata, separators=(",", ":"))
        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=True,
            can_publish_sources=["microphone"],
            can_publish_data=True,
            can_subscribe=True,
            can_update_own_metadata=False,
        )
        room_config = api.RoomConfiguration(
            agents=[api.RoomAgentDispatch(agent_name=self._agent_name, metadata=call_metadata)],
            metadata=call_metadata,
        )
        token = (
            api.AccessToken(self._api_key, self._api_secret)
            .with_identity(caller.identity)
            .with_name(display_name or caller.identity)
            .with_ttl(timedelta(seconds=self._ttl))
            .with_grants(grants)
            .with_room_config(room_config)
            .to_jwt()
        )
        return VoiceToken(
            rtc_url=self._rtc_url,
            token=token,
            expires_in=self._ttl,
            room=room,
            identity=caller.identity,
            call_id=call_id,
        )
