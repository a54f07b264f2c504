"""The call's room behind a small seam: what a call session needs of LiveKit, and no more.

`CallRoom` is the seam: join and leave, participants coming and going, the caller's microphone as
16 kHz PCM, the agent's voice track, the agent's attributes (`lk.agent.state`), data messages,
text streams and legacy transcription packets (captions), and disconnecting the caller when the
agent hangs up. `LiveKitRoom` is the real one, on `rtc.Room`. Tests drive a whole call session
through a fake room (`tests/fake_room.py`), so barge-in and the call's lifecycle are tested without
a LiveKit server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Protocol

from livekit import rtc

# The SDK hands out a publication's audio features but does not export their enum.
from livekit.rtc._proto.track_pb2 import AudioTrackFeature

from voice_agent.agent import ffi_routing
from voice_agent.agent.typed_chat import MAX_TYPED_CHARS
from voice_agent.protocol import TOPIC_CHAT, TOPIC_PRE_CONNECT_AUDIO

# The first client protocol that rebuilds transcription events from `lk.transcription` streams;
# clients below it (livekit-client 2.x advertises 2) read only legacy transcription packets.
_CLIENT_PROTOCOL_TRANSCRIPTION_STREAMS = 3


class CallerAudio(Protocol):
    """A participant's microphone track."""

    @property
    def sid(self) -> str:
        """The track's id (captions name the track they transcribe)."""
        ...

    @property
    def pre_connect_buffer(self) -> bool:
        """Whether its publisher announced a pre-connect audio buffer for it."""
        ...

    def frames(self, *, sample_rate: int, frame_ms: int) -> AsyncGenerator[bytes, None]:
        """Its audio as 16-bit mono PCM at `sample_rate`, `frame_ms` at a time, as it arrives."""
        ...


class RoomEvents(Protocol):
    """What the room tells its session (called on the event loop, never awaited)."""

    def participant_joined(self, identity: str, *, agent: bool) -> None:
        """Someone joined (`agent`: an agent participant, such as another worker)."""
        ...

    def participant_left(self, identity: str) -> None:
        """Someone left."""
        ...

    def microphone(self, identity: str, audio: CallerAudio) -> None:
        """A participant's audio track is subscribed."""
        ...

    def data_received(self, data: bytes, *, topic: str | None, sender: str | None) -> None:
        """A data message arrived on `topic` from `sender` (None: the server)."""
        ...

    def chat_received(self, text: str, *, sender: str, message_id: str) -> None:
        """A typed chat message arrived as a text stream on `lk.chat` (cut at
        `MAX_TYPED_CHARS` + 1 characters)."""
        ...

    def pre_connect_audio(
        self,
        chunks: AsyncIterator[bytes],
        *,
        sender: str,
        attributes: Mapping[str, str],
        mime_type: str,
    ) -> None:
        """A pre-connect audio buffer began arriving from `sender` (read it from `chunks`)."""
        ...


class CallRoom(Protocol):
    """The room of one call, as the session uses it."""

    @property
    def name(self) -> str:
        """The room's name."""
        ...

    async def join(self, events: RoomEvents) -> None:
        """Connect, delivering room events to `events` from now on."""
        ...

    def report_present(self) -> None:
        """Tell the events about participants and tracks already in the room."""
        ...

    async def publish_voice(self, track: rtc.LocalAudioTrack) -> str:
        """Publish the agent's voice as its microphone; the track's id."""
        ...

    async def set_attributes(self, attributes: Mapping[str, str]) -> None:
        """Set attributes of the agent participant (`lk.agent.state`)."""
        ...

    async def publish_data(self, payload: str, *, topic: str) -> None:
        """Send a reliable data message on `topic`."""
        ...

    async def send_text(
        self,
        text: str,
        *,
        topic: str,
        attributes: Mapping[str, str],
        sender_identity: str | None = None,
    ) -> None:
        """Send one text stream (a caption version), on someone's behalf if `sender_identity`."""
        ...

    async def send_transcription(
        self,
        text: str,
        *,
        segment_id: str,
        final: bool,
        track_sid: str,
        participant_identity: str | None = None,
    ) -> None:
        """Send a caption version as a legacy transcription packet of `track_sid`, on behalf of
        `participant_identity` (None: the agent), while some client in the room needs one."""
        ...

    async def hang_up(self) -> None:
        """End the call for the callers: disconnect every participant but agents."""
        ...

    async def leave(self) -> None:
        """Disconnect."""
        ...


class _Microphone:
    """A subscribed LiveKit audio track."""

    def __init__(self, track: rtc.Track, publication: rtc.RemoteTrackPublication) -> None:
        self._track = track
        self._sid = publication.sid
        features = publication.audio_features
        self._pre_connect = AudioTrackFeature.TF_PRECONNECT_BUFFER in features

    @property
    def sid(self) -> str:
        return self._sid

    @property
    def pre_connect_buffer(self) -> bool:
        return self._pre_connect

    async def frames(self, *, sample_rate: int, frame_ms: int) -> AsyncGenerator[bytes, None]:
        # LiveKit's native side resamples the room's 48 kHz before the frame reaches Python: one
        # FFI event per frame and a third of the bytes, instead of a Python-side resampler.
        stream = rtc.AudioStream(
            self._track, sample_rate=sample_rate, num_channels=1, frame_size_ms=frame_ms
        )
        try:
            async for event in stream:
                yield bytes(event.frame.data.cast("B"))
        finally:
            await stream.aclose()


class LiveKitRoom:
    """A `CallRoom` on a LiveKit server, joined with the job's URL and token; `remove` disconnects
    participants of a room by identity, through the server API (without it, hanging up does
    nothing: the agent just leaves)."""

    def __init__(
        self,
        *,
        url: str,
        token: str,
        remove: Callable[[str, list[str]], Awaitable[object]] | None = None,
    ) -> None:
        self._url = url
        self._token = token
        self._remove = remove
        self._room = rtc.Room()
        self._events: RoomEvents | None = None
        self._readers: set[asyncio.Task[Any]] = set()

    @property
    def name(self) -> str:
        return self._room.name

    async def join(self, events: RoomEvents) -> None:
        self._events = events
        room = self._room
        room.on("participant_connected", self._joined)
        room.on("participant_disconnected", self._left)
        room.on("track_subscribed", self._track)
        room.on("data_received", self._data)
        room.register_text_stream_handler(TOPIC_CHAT, self._chat)
        # Before connecting: the caller's client sends its buffer as soon as the agent is in.
        room.register_byte_stream_handler(TOPIC_PRE_CONNECT_AUDIO, self._pre_connect)
        await room.connect(self._url, self._token)
        ffi_routing.narrow_room(room)

    def report_present(self) -> None:
        for participant in list(self._room.remote_participants.values()):
            self._joined(participant)
            for publication in participant.track_publications.values():
                if publication.track is not None:
                    self._track(publication.track, publication, participant)

    async def publish_voice(self, track: rtc.LocalAudioTrack) -> str:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await self._room.local_participant.publish_track(track, options)
        return publication.sid

    async def set_attributes(self, attributes: Mapping[str, str]) -> None:
        await self._room.local_participant.set_attributes(dict(attributes))

    async def publish_data(self, payload: str, *, topic: str) -> None:
        await self._room.local_participant.publish_data(payload, reliable=True, topic=topic)

    async def send_text(
        self,
        text: str,
        *,
        topic: str,
        attributes: Mapping[str, str],
        sender_identity: str | None = None,
    ) -> None:
        writer = await self._room.local_participant.stream_text(
            topic=topic, attributes=dict(attributes), sender_identity=sender_identity
        )
        await writer.write(text)
        await writer.aclose()

    async def send_transcription(
        self,
        text: str,
        *,
        segment_id: str,
        final: bool,
        track_sid: str,
        participant_identity: str | None = None,
    ) -> None:
        if not self._legacy_transcription_needed():
            return
        segment = rtc.TranscriptionSegment(
            id=segment_id, text=text, start_time=0, end_time=0, language="", final=final
        )
        identity = participant_identity or self._room.local_participant.identity
        transcription = rtc.Transcription(
            participant_identity=identity, track_sid=track_sid, segments=[segment]
        )
        await self._room.local_participant.publish_transcription(transcription)

    def _legacy_transcription_needed(self) -> bool:
        """Whether a caller's client (a standard participant) reads only legacy packets. The
        client protocol is only on the participant's private info in this SDK."""
        return any(
            p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
            and p._info.client_protocol < _CLIENT_PROTOCOL_TRANSCRIPTION_STREAMS
            for p in self._room.remote_participants.values()
        )

    async def hang_up(self) -> None:
        if self._remove is not None and self._room.name:
            callers = [
                p.identity
                for p in self._room.remote_participants.values()
                if p.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            ]
            await self._remove(self._room.name, callers)

    async def leave(self) -> None:
        for reader in [*self._readers]:
            reader.cancel()
        with contextlib.suppress(Exception):  # leaving a room that is already gone is fine
            await self._room.disconnect()

    def _joined(self, participant: rtc.RemoteParticipant) -> None:
        if self._events is not None:
            agent = participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            self._events.participant_joined(participant.identity, agent=agent)

    def _left(self, participant: rtc.RemoteParticipant) -> None:
        if self._events is not None:
            self._events.participant_left(participant.identity)

    def _track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if self._events is not None and track.kind == rtc.TrackKind.KIND_AUDIO:
            self._events.microphone(participant.identity, _Microphone(track, publication))

    def _pre_connect(self, reader: rtc.ByteStreamReader, sender: str) -> None:
        if self._events is not None:
            info = reader.info
            self._events.pre_connect_audio(
                aiter(reader),
                sender=sender,
                attributes=info.attributes or {},
                mime_type=info.mime_type,
            )

    def _data(self, packet: rtc.DataPacket) -> None:
        if self._events is not None:
            sender = packet.participant.identity if packet.participant is not None else None
            self._events.data_received(packet.data, topic=packet.topic, sender=sender)

    def _chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        task = asyncio.ensure_future(self._read_chat(reader, sender))
        self._readers.add(task)
        task.add_done_callback(self._readers.discard)

    async def _read_chat(self, reader: rtc.TextStreamReader, sender: str) -> None:
        """Read a chat stream, at most one character past the limit (the rest is not kept)."""
        parts: list[str] = []
        size = 0
        try:
            async for chunk in reader:
                parts.append(chunk[: MAX_TYPED_CHARS + 1 - size])
                size += len(chunk)
                if size > MAX_TYPED_CHARS:
                    break
        except rtc.StreamError:
            return  # aborted by the sender: nothing was said
        finally:
            reader.close()
        if self._events is not None:
            self._events.chat_received(
                "".join(parts), sender=sender, message_id=reader.info.stream_id
            )
