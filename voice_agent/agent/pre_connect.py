"""The caller's audio from before the agent joined: LiveKit's pre-connect audio buffer.

`livekit-client` (with `preConnectBuffer`, the default of LiveKit's `useSession`) records the
microphone from the moment it is published, and once the agent is in the room sends what it
recorded as one byte stream on `lk.agent.pre-connect-audio-buffer`, to the agent only: Opus in
WebM (or MP4 where the browser has no WebM), with the attributes `trackId`, `sampleRate` and
`channels`. The stream ends when the agent has subscribed to that track, so the buffer and the
live track meet: the listener hears the buffer first, then the track, and words said before the
agent joined are answered (and the caller need not wait for the agent before speaking).

`livekit-client` stops recording when it hears the agent subscribed, but it registers for that
event only after publishing (a race its own source notes), so a buffer can go on recording for its
full 10 s. The listener waits `WAIT_S` for the stream to end; past that it takes what has arrived,
less the stretch the live track also carries, and ignores the rest of the stream.

It is outside input like any other: only the call's user may send it, for one track, of a bounded
size and duration, in a known container; anything else is dropped and logged, never raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import av

from voice_agent.logging import Logger

MAX_BUFFER_BYTES = 512 * 1024
"""The largest buffer taken: livekit-client records at most 10 s, about 40 KiB of Opus."""
MAX_BUFFER_S = 12.0
"""The longest decoded buffer kept (the client stops recording after 10 s)."""
_MIME_TYPES = frozenset({"audio/webm", "audio/ogg", "audio/opus", "audio/mp4", "video/mp4"})
_SAMPLE_RATES = frozenset({8000, 16000, 24000, 32000, 44100, 48000})
_MAX_TRACK_ID_CHARS = 64
MAX_STREAMS = 4
"""Buffer streams read per call (one per microphone track is what a client sends)."""
# How long the listener waits for a buffer that has started arriving before the live track.
WAIT_S = 3.0


class PreConnectRejectedError(ValueError):
    """A pre-connect buffer that is not taken, with why."""


@dataclass(frozen=True)
class PreConnectAudio:
    """A decoded buffer: 16-bit mono PCM at `sample_rate`."""

    track_sid: str
    pcm: bytes
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate


def check_header(
    *, sender: str, user: str | None, attributes: Mapping[str, str], mime_type: str
) -> str:
    """The track the buffer belongs to, if the stream's header is acceptable."""
    if user is None or sender != user:
        raise PreConnectRejectedError("sender is not the call's user")
    track = attributes.get("trackId", "")
    if not track or len(track) > _MAX_TRACK_ID_CHARS or not track.isascii():
        raise PreConnectRejectedError("missing or malformed trackId")
    if mime_type.split(";")[0].strip().lower() not in _MIME_TYPES:
        raise PreConnectRejectedError(f"unsupported mime type {mime_type[:80]!r}")
    try:
        rate, channels = int(attributes["sampleRate"]), int(attributes["channels"])
    except (KeyError, ValueError):
        raise PreConnectRejectedError("missing or malformed sampleRate or channels") from None
    if rate not in _SAMPLE_RATES or channels not in (1, 2):
        raise PreConnectRejectedError(f"unsupported format {rate} Hz, {channels} channels")
    return track


def decode(data: bytes, *, sample_rate: int) -> bytes:
    """The container's first audio stream as 16-bit mono PCM at `sample_rate` (CPU: run it off
    the event loop); at most `MAX_BUFFER_S` of it."""
    limit = int(MAX_BUFFER_S * sample_rate) * 2
    out = bytearray()
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise PreConnectRejectedError("no audio stream")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            for frame in container.decode(audio=0):
                for chunk in resampler.resample(frame):
                    out += bytes(chunk.planes[0])[: chunk.samples * 2]
                if len(out) >= limit:
                    break
            for chunk in resampler.resample(None):
                out += bytes(chunk.planes[0])[: chunk.samples * 2]
    except av.FFmpegError as e:
        raise PreConnectRejectedError(f"undecodable audio: {e}") from None
    return bytes(out[:limit])


class PreConnectBuffers:
    """The buffers of one call, by track: received, checked and decoded as they arrive."""

    def __init__(self, *, sample_rate: int, log: Logger) -> None:
        self._rate = sample_rate
        self._log = log
        self._buffers: dict[str, asyncio.Future[PreConnectAudio | None]] = {}
        self._taken: set[str] = set()
        self._arrived: dict[str, bytearray] = {}
        self._streams = 0

    async def receive(
        self,
        chunks: AsyncIterator[bytes],
        *,
        sender: str,
        user: str | None,
        attributes: Mapping[str, str],
        mime_type: str,
    ) -> None:
        """Read one buffer stream; a rejected one is logged and dropped."""
        started = time.monotonic()
        try:
            track = check_header(
                sender=sender, user=user, attributes=attributes, mime_type=mime_type
            )
        except PreConnectRejectedError as e:
            self._log.warning("call.pre_connect_rejected", sender=sender, error=str(e))
            return
        if track in self._taken:
            self._log.warning("call.pre_connect_rejected", sender=sender, error="too late")
            return
        self._streams += 1
        if self._streams > MAX_STREAMS:
            self._log.warning("call.pre_connect_rejected", sender=sender, error="too many")
            return
        future = self._buffers.get(track)
        if future is None or future.done():
            future = self._buffers[track] = asyncio.get_running_loop().create_future()
        arrived = self._arrived[track] = bytearray()
        try:
            data = await self._read(chunks, arrived, track)
            if track in self._taken:
                self._log.info(
                    "call.pre_connect_ignored",
                    track_sid=track,
                    bytes=len(data),
                    reason="the live track was taken with what had arrived",
                )
                return
            pcm = await asyncio.to_thread(decode, data, sample_rate=self._rate)
        except PreConnectRejectedError as e:
            self._log.warning("call.pre_connect_rejected", sender=sender, error=str(e))
            if not future.done():
                future.set_result(None)
            return
        except Exception as e:  # noqa: BLE001 - a stream cut by the sender or the room: no buffer
            self._log.warning("call.pre_connect_rejected", sender=sender, error=repr(e)[:300])
            if not future.done():
                future.set_result(None)
            return
        finally:
            if self._arrived.get(track) is arrived:
                del self._arrived[track]
        audio = PreConnectAudio(track_sid=track, pcm=pcm, sample_rate=self._rate)
        self._log.info(
            "call.pre_connect_audio",
            track_sid=track,
            audio_s=round(audio.duration_s, 2),
            bytes=len(data),
            took_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if not future.done():
            future.set_result(audio)

    def pending(self, track_sid: str) -> bool:
        """Whether a buffer for `track_sid` has started arriving (and is not taken yet)."""
        return track_sid in self._buffers

    async def take(
        self,
        track_sid: str,
        *,
        announced: bool = False,
        wait_s: float = WAIT_S,
        live_since: float | None = None,
    ) -> PreConnectAudio | None:
        """The buffer of `track_sid`, waited for (bounded) if it has started arriving or the
        track `announced` one (its client sends it once the agent is in, often only after the
        agent subscribed); None when there is none. A buffer still arriving after `wait_s` is
        taken as far as it came, less the audio since `live_since` (`time.monotonic()` of the
        live track's first frame), which the live track carries too."""
        future = self._buffers.get(track_sid)
        if future is None and announced:
            future = self._buffers[track_sid] = asyncio.get_running_loop().create_future()
        if future is None:
            return None
        try:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(future), wait_s)
        finally:
            # Taken once: the live track has begun, a buffer arriving later is stale.
            self._buffers.pop(track_sid, None)
            self._taken.add(track_sid)
        return await self._so_far(track_sid, wait_s=wait_s, live_since=live_since)

    async def _so_far(
        self, track_sid: str, *, wait_s: float, live_since: float | None
    ) -> PreConnectAudio | None:
        """What has arrived of a buffer still streaming, up to where the live track began."""
        data = bytes(self._arrived.get(track_sid, b""))
        overlap_s = max(0.0, time.monotonic() - live_since) if live_since is not None else 0.0
        pcm = b""
        if data:
            with contextlib.suppress(PreConnectRejectedError):
                pcm = await asyncio.to_thread(decode, data, sample_rate=self._rate)
        keep = max(0, len(pcm) // 2 - int(overlap_s * self._rate)) * 2
        self._log.warning(
            "call.pre_connect_late",
            track_sid=track_sid,
            waited_s=wait_s,
            arrived_s=round(len(pcm) / 2 / self._rate, 2),
            kept_s=round(keep / 2 / self._rate, 2),
        )
        if not keep:
            return None
        return PreConnectAudio(track_sid=track_sid, pcm=pcm[:keep], sample_rate=self._rate)

    async def _read(self, chunks: AsyncIterator[bytes], data: bytearray, track: str) -> bytes:
        """The stream's bytes, gathered in `data` as they come (a late `take` reads them there);
        not read on once the track's buffer was taken."""
        async for chunk in chunks:
            if track in self._taken:
                break
            data += chunk
            if len(data) > MAX_BUFFER_BYTES:
                raise PreConnectRejectedError(f"larger than {MAX_BUFFER_BYTES} bytes")
        return bytes(data)
