"""The agent's voice in the room: one audio track fed in real time, stoppable at once.

Audio arrives as PCM at the TTS voice's rate, tagged with the index of the text segment it speaks;
it is resampled to the room rate and cut into 80 ms frames. LiveKit's `AudioSource` holds only a
short queue, so stopping (barge-in) discards at most that much, and what was really played is
known to within a frame: the speaker counts frames handed over minus what was still queued.
A pause keeps the unplayed frames, so a false interruption resumes exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from livekit import rtc

from voice_agent.pipeline.resample import StreamResampler

ROOM_RATE = 48_000
FRAME_MS = 80  # per frame handed to LiveKit; fewer, larger frames cost less per call
FRAME_SAMPLES = ROOM_RATE * FRAME_MS // 1000
FRAME_BYTES = FRAME_SAMPLES * 2
QUEUE_MS = 100


class AudioSink(Protocol):
    """Where the speaker's frames go: an `rtc.AudioSource` (its short queue plays in real time)."""

    @property
    def queued_duration(self) -> float:
        """Seconds of audio handed over but not yet played."""
        ...

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        """Queue a frame; waits while the queue is full."""
        ...

    def clear_queue(self) -> None:
        """Drop what is queued and not yet played."""
        ...

    async def wait_for_playout(self) -> None:
        """Until everything queued has been played."""
        ...

    async def aclose(self) -> None:
        """Release the sink."""
        ...


@dataclass(frozen=True, slots=True)
class _Frame:
    pcm: bytes
    segment: int


class AgentSpeaker:
    """Plays agent speech into one `rtc.AudioSource` (any `AudioSink`); one reply at a time."""

    def __init__(self, *, source: AudioSink) -> None:
        self._source = source
        self._pending: collections.deque[_Frame] = collections.deque()
        self._played: collections.deque[_Frame] = collections.deque(maxlen=QUEUE_MS // FRAME_MS + 5)
        self._wake = asyncio.Event()
        self._paused = False
        self._closed = False
        self._resampler: StreamResampler | None = None
        self._carry = b""
        self._carry_segment = 0
        self._segment_samples: collections.Counter[int] = collections.Counter()
        self._on_first_frame: Callable[[float], None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def create(cls) -> tuple[AgentSpeaker, rtc.LocalAudioTrack]:
        """A speaker and the room track it feeds."""
        source = rtc.AudioSource(ROOM_RATE, 1, queue_size_ms=QUEUE_MS)
        track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
        return cls(source=source), track

    def start(self) -> None:
        """Begin feeding the track (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._feed(), name="speaker")

    # Producing

    def begin_reply(self, on_first_frame: Callable[[float], None] | None = None) -> None:
        """Start a new reply: forget the last one's accounting; call back on its first frame."""
        self._segment_samples.clear()
        self._on_first_frame = on_first_frame
        self._paused = False

    def push(self, pcm: bytes, *, sample_rate: int, segment: int) -> None:
        """Queue speech for text segment `segment` (PCM at `sample_rate`)."""
        if self._resampler is None or self._resampler.input_rate != sample_rate:
            self._resampler = StreamResampler(input_rate=sample_rate, output_rate=ROOM_RATE)
        self._queue(self._resampler.push(pcm), segment)

    def end_segment(self, segment: int) -> None:
        """The segment's audio is complete: flush the resampler and pad the last frame."""
        if self._resampler is not None:
            self._queue(self._resampler.flush(), segment)
        if self._carry:
            self._append(self._carry + b"\0" * (FRAME_BYTES - len(self._carry)), segment)
            self._carry = b""

    def push_frames(self, pcm_48k: bytes, *, segment: int) -> None:
        """Queue speech already at the room rate (pre-synthesised lines)."""
        self._queue(pcm_48k, segment)
        self.end_segment(segment)

    def _queue(self, pcm: bytes, segment: int) -> None:
        data = self._carry + pcm
        whole = len(data) // FRAME_BYTES * FRAME_BYTES
        for i in range(0, whole, FRAME_BYTES):
            self._append(data[i : i + FRAME_BYTES], segment)
        self._carry = data[whole:]

    def _append(self, pcm: bytes, segment: int) -> None:
        self._pending.append(_Frame(pcm, segment))
        self._idle.clear()
        self._wake.set()

    # Controlling

    def pause(self) -> None:
        """Stop sound now, keeping what was not yet heard for `resume()`."""
        if self._paused:
            return
        self._paused = True
        unplayed = round(self._source.queued_duration * 1000 / FRAME_MS)
        self._source.clear_queue()
        for _ in range(min(unplayed, len(self._played))):
            frame = self._played.pop()
            self._pending.appendleft(frame)
            self._segment_samples[frame.segment] -= FRAME_SAMPLES
        self._played.clear()

    def resume(self) -> None:
        """Carry on after `pause()` from where the listener stopped hearing."""
        self._paused = False
        self._wake.set()

    def stop(self) -> None:
        """Stop sound now and drop everything queued (a confirmed barge-in)."""
        self.pause()
        self._pending.clear()
        self._carry = b""
        if self._resampler is not None:
            self._resampler.flush()
        self._paused = False
        self._idle.set()

    @property
    def speaking(self) -> bool:
        """Whether speech is queued or playing (and not paused)."""
        return not self._paused and not self._idle.is_set()

    def played_seconds(self, segment: int) -> float:
        """How much of segment `segment` the listener has heard so far."""
        unheard = round(self._source.queued_duration * 1000 / FRAME_MS)
        recent = list(self._played)[-unheard:] if unheard else []
        not_heard = sum(1 for f in recent if f.segment == segment)
        return max(self._segment_samples[segment] - not_heard * FRAME_SAMPLES, 0) / ROOM_RATE

    async def wait_idle(self) -> None:
        """Until everything queued has been played out (or dropped by `stop()`)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Stop feeding and release the source."""
        self._closed = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._source.aclose()

    async def _feed(self) -> None:
        while not self._closed:
            if self._paused or not self._pending:
                self._wake.clear()
                if self._paused or self._idle.is_set():
                    await self._wake.wait()
                else:
                    await self._until_woken_or_played_out()
                continue
            frame = self._pending.popleft()
            self._played.append(frame)
            self._segment_samples[frame.segment] += FRAME_SAMPLES
            if self._on_first_frame is not None:
                callback, self._on_first_frame = self._on_first_frame, None
                callback(time.monotonic())
            await self._source.capture_frame(rtc.AudioFrame(frame.pcm, ROOM_RATE, 1, FRAME_SAMPLES))

    async def _until_woken_or_played_out(self) -> None:
        """Nothing left to hand over: wait for more speech, or mark idle once all is heard."""
        playout = asyncio.ensure_future(self._source.wait_for_playout())
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            done, _ = await asyncio.wait({playout, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            playout.cancel()
            woken.cancel()
        if playout in done and not self._pending and not self._paused:
            self._idle.set()
