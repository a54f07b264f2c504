"""A call room without LiveKit: the `CallRoom` seam, recorded, with a caller the test drives.

The agent's voice still plays into a real (unpublished) `rtc.AudioSource`, so playout, pausing and
what was heard are real; the caller's microphone is PCM the test feeds in real time.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import av
import numpy as np
from livekit import rtc

from voice_agent.agent.listener import FRAME_MS, SAMPLE_RATE
from voice_agent.agent.room import RoomEvents
from voice_agent.protocol import (
    ATTR_AGENT_STATE,
    ATTR_TRANSCRIPTION_FINAL,
    TOPIC_AGENT_TURNS,
    TOPIC_TRANSCRIPTION,
)

FRAME_BYTES = SAMPLE_RATE * FRAME_MS // 1000 * 2
SILENCE_FRAME = bytes(FRAME_BYTES)


class FakeMicrophone:
    """The caller's microphone: frames the test pushes, silence in between, in real time."""

    sid = "TR_caller_mic"
    pre_connect_buffer = False  # its client announced none (a buffer may still come)

    def __init__(self) -> None:
        self._speech: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        self.spoken = asyncio.Event()  # set when everything queued has been sent

    def say(self, pcm: bytes) -> None:
        """Queue `pcm` (16 kHz mono) to be spoken after what is already queued."""
        self.spoken.clear()
        for i in range(0, len(pcm), FRAME_BYTES):
            self._speech.put_nowait(pcm[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\0"))

    def close(self) -> None:
        """End the track."""
        self._closed = True

    async def frames(self, *, sample_rate: int, frame_ms: int) -> AsyncGenerator[bytes, None]:
        assert (sample_rate, frame_ms) == (SAMPLE_RATE, FRAME_MS)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self._closed:
            if self._speech.empty():
                self.spoken.set()
                frame = SILENCE_FRAME
            else:
                frame = self._speech.get_nowait()
            next_at += FRAME_MS / 1000
            # A microphone delivers a frame when it has been recorded: pace like one.
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            yield frame


@dataclass
class Caption:
    """One caption version the agent sent."""

    text: str
    final: bool
    sender: str | None
    attributes: dict[str, str]


@dataclass
class FakeRoom:
    """Records what the session sends; lets the test play the caller."""

    name: str = "call-fake"
    events: RoomEvents | None = None
    states: list[str] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    data: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    captions: list[Caption] = field(default_factory=list)
    voice: rtc.LocalAudioTrack | None = None
    legacy_captions: list[Caption] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)
    hung_up: bool = False  # the agent disconnected the caller (before leaving)
    left: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    # The seam

    async def join(self, events: RoomEvents) -> None:
        self.events = events

    def report_present(self) -> None:
        pass  # the caller joins when the test says so

    async def publish_voice(self, track: rtc.LocalAudioTrack) -> str:
        self.voice = track
        return "TR_agent_voice"

    async def set_attributes(self, attributes: Mapping[str, str]) -> None:
        self.attributes.update(attributes)
        if ATTR_AGENT_STATE in attributes:
            await self._record(lambda: self.states.append(attributes[ATTR_AGENT_STATE]))

    async def publish_data(self, payload: str, *, topic: str) -> None:
        message = json.loads(payload)
        await self._record(lambda: self.data.append((topic, message)))
        if topic == TOPIC_AGENT_TURNS:
            await self._record(lambda: self.turns.append(message))

    async def send_text(
        self,
        text: str,
        *,
        topic: str,
        attributes: Mapping[str, str],
        sender_identity: str | None = None,
    ) -> None:
        if topic == TOPIC_TRANSCRIPTION:
            final = attributes.get(ATTR_TRANSCRIPTION_FINAL) == "true"
            caption = Caption(text, final, sender_identity, dict(attributes))
            await self._record(lambda: self.captions.append(caption))

    async def send_transcription(
        self,
        text: str,
        *,
        segment_id: str,
        final: bool,
        track_sid: str,
        participant_identity: str | None = None,
    ) -> None:
        attributes = {"segment_id": segment_id, "track_sid": track_sid}
        caption = Caption(text, final, participant_identity, attributes)
        await self._record(lambda: self.legacy_captions.append(caption))

    async def hang_up(self) -> None:
        assert not self.left.is_set(), "the caller is disconnected before the agent leaves"
        self.hung_up = True

    async def leave(self) -> None:
        self.left.set()

    # The caller

    def caller_joins(self, identity: str) -> FakeMicrophone:
        """The caller enters with a microphone."""
        assert self.events is not None, "the session has not joined yet"
        self.events.participant_joined(identity, agent=False)
        microphone = FakeMicrophone()
        self.events.microphone(identity, microphone)
        return microphone

    def caller_sends_pre_connect(
        self,
        identity: str,
        data: bytes,
        *,
        attributes: Mapping[str, str],
        mime_type: str = "audio/webm;codecs=opus",
    ) -> None:
        """The caller's client sends its pre-connect audio buffer, in 4 KiB chunks."""
        assert self.events is not None

        async def chunks() -> AsyncGenerator[bytes, None]:
            for i in range(0, len(data), 4096):
                yield data[i : i + 4096]

        self.events.pre_connect_audio(
            chunks(), sender=identity, attributes=attributes, mime_type=mime_type
        )

    def caller_leaves(self, identity: str) -> None:
        """The caller hangs up."""
        assert self.events is not None
        self.events.participant_left(identity)

    async def wait_for(self, condition: Callable[[], bool], *, timeout_s: float = 15.0) -> None:
        """Until `condition()` holds for what the room has recorded (bounded)."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(condition)

    async def _record(self, change: Callable[[], None]) -> None:
        async with self._changed:
            change()
            self._changed.notify_all()


def webm_opus(pcm: bytes, *, sample_rate: int) -> bytes:
    """16-bit mono PCM as a browser's MediaRecorder sends it: Opus at 48 kHz in WebM."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        samples = np.frombuffer(pcm, np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()
