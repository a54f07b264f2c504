"""Live captions, following LiveKit's agent conventions, in both of the forms its clients read.

Each caption segment has an id; interim versions carry `lk.transcription_final=false` and the
text so far, the last carries `true` and the final text, so a client keeps one line per segment
id and replaces its text. Every version goes out twice: as a text stream on `lk.transcription`
(what `livekit-client` 2.x and `useTranscriptions` read) and as a legacy transcription packet
(what `useVoiceAssistant().agentTranscriptions` and `useTrackTranscription` read; the room sends
it only while some caller's client still needs it). User captions are sent on the user's behalf
and name the user's microphone track; agent captions name the agent's voice track.

Every segment that was shown ends with a final version: `end()` closes one (with the words that
were committed, "" when none were), and `aclose()` closes what is still open when the call ends
and waits for the versions still being sent, so a caption is never left interim on a client.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass

from voice_agent.agent.room import CallRoom
from voice_agent.logging import get_logger
from voice_agent.protocol import (
    ATTR_TRANSCRIBED_TRACK_ID,
    ATTR_TRANSCRIPTION_FINAL,
    ATTR_TRANSCRIPTION_SEGMENT_ID,
    TOPIC_TRANSCRIPTION,
)

log = get_logger("agent.captions")

# How long closing the captions at the end of a call may wait for versions still being sent.
_DRAIN_TIMEOUT_S = 2.0


def new_segment_id() -> str:
    """A fresh caption segment id."""
    return f"SG_{secrets.token_hex(6)}"


@dataclass
class _Open:
    """A segment shown as interim, not yet final."""

    text: str
    track_sid: str | None
    sender_identity: str | None


class CaptionPublisher:
    """Publishes caption segments into the room; failures are logged, never raised."""

    def __init__(self, room: CallRoom) -> None:
        self._room = room
        # One caption at a time, in call order: a late interim must never land after its final.
        self._order = asyncio.Lock()
        self._open: dict[str, _Open] = {}
        self._finished: set[str] = set()
        self._sending: set[asyncio.Task[None]] = set()
        self._closed = False

    def post(
        self,
        *,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None = None,
    ) -> None:
        """Queue one version of a segment without waiting (sent in the order posted)."""
        self._queue(text, segment_id, final, track_sid, sender_identity)

    async def publish(
        self,
        *,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None = None,
    ) -> None:
        """Send one version of a segment, after those posted before it, and wait until sent."""
        task = self._queue(text, segment_id, final, track_sid, sender_identity)
        if task is not None:
            await asyncio.shield(task)  # cancelled, the version still goes out

    def _queue(
        self,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None,
    ) -> asyncio.Task[None] | None:
        if not self._admit(text, segment_id, final, track_sid, sender_identity):
            return None
        # Tasks start in creation order and queue on the lock in that order.
        task = asyncio.ensure_future(
            self._deliver(text, segment_id, final, track_sid, sender_identity)
        )
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)
        return task

    def _admit(
        self,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None,
    ) -> bool:
        """Keep the segment's state; False for a version that must not go out (an interim
        after its final, or once the call's captions are closed)."""
        if segment_id in self._finished:
            return False
        if final:
            self._open.pop(segment_id, None)
            self._finished.add(segment_id)
            return True
        if self._closed:
            return False
        self._open[segment_id] = _Open(text, track_sid, sender_identity)
        return True

    async def _deliver(
        self,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None,
    ) -> None:
        attributes = {
            ATTR_TRANSCRIPTION_FINAL: "true" if final else "false",
            ATTR_TRANSCRIPTION_SEGMENT_ID: segment_id,
        }
        if track_sid:
            attributes[ATTR_TRANSCRIBED_TRACK_ID] = track_sid
        async with self._order:
            await self._send(text, attributes, sender_identity, segment_id)
            await self._send_legacy(text, segment_id, final, track_sid, sender_identity)

    def is_open(self, segment_id: str) -> bool:
        """Whether the segment was shown as interim and has no final version yet."""
        return segment_id in self._open

    async def end(self, segment_id: str, text: str = "") -> None:
        """Send the segment's final version, if it was shown and is still open."""
        segment = self._open.get(segment_id)
        if segment is not None:
            await self.publish(
                text=text,
                segment_id=segment_id,
                final=True,
                track_sid=segment.track_sid,
                sender_identity=segment.sender_identity,
            )

    async def aclose(self) -> None:
        """The call ends: close every open segment with its last text; wait for what is being
        sent (bounded), so no caption stays interim and no stream is cut off."""
        self._closed = True
        for segment_id, segment in list(self._open.items()):
            self.post(
                text=segment.text,
                segment_id=segment_id,
                final=True,
                track_sid=segment.track_sid,
                sender_identity=segment.sender_identity,
            )
        if self._sending:
            _, late = await asyncio.wait(set(self._sending), timeout=_DRAIN_TIMEOUT_S)
            if late:
                log.warning("captions.drain_timeout", pending=len(late))

    async def _send(
        self, text: str, attributes: dict[str, str], sender_identity: str | None, segment_id: str
    ) -> None:
        try:
            await self._room.send_text(
                text,
                topic=TOPIC_TRANSCRIPTION,
                attributes=attributes,
                sender_identity=sender_identity,
            )
        except Exception as e:  # noqa: BLE001 - a caption lost is logged; the call goes on
            log.warning("captions.publish_failed", segment_id=segment_id, error=str(e))

    async def _send_legacy(
        self,
        text: str,
        segment_id: str,
        final: bool,
        track_sid: str | None,
        sender_identity: str | None,
    ) -> None:
        if not track_sid:
            return  # a legacy packet belongs to a track
        try:
            await self._room.send_transcription(
                text,
                segment_id=segment_id,
                final=final,
                track_sid=track_sid,
                participant_identity=sender_identity,
            )
        except Exception as e:  # noqa: BLE001 - a caption lost is logged; the call goes on
            log.warning("captions.publish_failed", segment_id=segment_id, error=str(e))
