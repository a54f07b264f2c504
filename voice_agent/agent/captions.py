"""Live captions on `lk.transcription`, following LiveKit's agent conventions.

Each caption segment has an id; interim versions carry `lk.transcription_final=false` and the
text so far, the last carries `true` and the final text, so a client keeps one line per segment
id and replaces its text. User captions are sent on the user's behalf (`sender_identity`) and name
the user's microphone track; agent captions name the agent's voice track.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Mapping
from typing import Protocol

from voice_agent.logging import get_logger
from voice_agent.protocol import (
    ATTR_TRANSCRIBED_TRACK_ID,
    ATTR_TRANSCRIPTION_FINAL,
    ATTR_TRANSCRIPTION_SEGMENT_ID,
    TOPIC_TRANSCRIPTION,
)

log = get_logger("agent.captions")


class TextSender(Protocol):
    """Sends one text stream into the room (the call room's `send_text`)."""

    def __call__(
        self,
        text: str,
        *,
        topic: str,
        attributes: Mapping[str, str],
        sender_identity: str | None = None,
    ) -> Awaitable[None]: ...


def new_segment_id() -> str:
    """A fresh caption segment id."""
    return f"SG_{secrets.token_hex(6)}"


class CaptionPublisher:
    """Publishes caption segments into the room; failures are logged, never raised."""

    def __init__(self, send: TextSender) -> None:
        self._send_text = send
        # One caption at a time, in call order: a late interim must never land after its final.
        self._order = asyncio.Lock()

    async def publish(
        self,
        *,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None = None,
    ) -> None:
        """Send one version of a caption segment."""
        attributes = {
            ATTR_TRANSCRIPTION_FINAL: "true" if final else "false",
            ATTR_TRANSCRIPTION_SEGMENT_ID: segment_id,
        }
        if track_sid:
            attributes[ATTR_TRANSCRIBED_TRACK_ID] = track_sid
        async with self._order:
            await self._send(text, attributes, sender_identity, segment_id)

    async def _send(
        self, text: str, attributes: dict[str, str], sender_identity: str | None, segment_id: str
    ) -> None:
        try:
            await self._send_text(
                text,
                topic=TOPIC_TRANSCRIPTION,
                attributes=attributes,
                sender_identity=sender_identity,
            )
        except Exception as e:  # noqa: BLE001 - a caption lost is logged; the call goes on
            log.warning("captions.publish_failed", segment_id=segment_id, error=str(e))
