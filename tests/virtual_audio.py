"""An audio sink whose playout advances only when the test says: the speaker in virtual time."""

from __future__ import annotations

import asyncio
import collections

from livekit import rtc

from voice_agent.agent.speaker import QUEUE_MS, AgentSpeaker


class VirtualSource:
    """Stands in for `rtc.AudioSource`: holds up to QUEUE_MS of frames until `play` plays them.

    Like the real source, `capture_frame` waits while the queue is full, and a capture waiting
    when the queue is cleared goes through.
    """

    def __init__(self) -> None:
        self._queued: collections.deque[rtc.AudioFrame] = collections.deque()
        self._space = asyncio.Event()
        self._space.set()
        self._drained = asyncio.Event()
        self._drained.set()
        self.captured = 0  # frames handed over so far
        self.played_s = 0.0

    @property
    def queued_duration(self) -> float:
        return sum(f.duration for f in self._queued)

    async def capture_frame(self, frame: rtc.AudioFrame) -> None:
        await self._space.wait()
        self._queued.append(frame)
        self.captured += 1
        self._changed()

    def clear_queue(self) -> None:
        self._queued.clear()
        self._changed()

    async def wait_for_playout(self) -> None:
        await self._drained.wait()

    async def aclose(self) -> None:
        self.clear_queue()

    async def play(self, seconds: float) -> None:
        """Let `seconds` of audio play, frame by frame, giving the speaker its turn after each;
        stops early when nothing is queued (the speaker is paused, stopped or idle)."""
        while seconds > 1e-9:
            await settle()
            if not self._queued:
                return
            frame = self._queued.popleft()
            self.played_s += frame.duration
            seconds -= frame.duration
            self._changed()
        await settle()

    def _changed(self) -> None:
        if self.queued_duration * 1000 < QUEUE_MS:
            self._space.set()
        else:
            self._space.clear()
        if self._queued:
            self._drained.clear()
        else:
            self._drained.set()


async def settle() -> None:
    """Run every task that can run now, until all wait on something only the test or another
    task will do (a few dozen passes of the event loop; no wall-clock time passes)."""
    for _ in range(50):
        await asyncio.sleep(0)


def virtual_speaker() -> tuple[AgentSpeaker, VirtualSource]:
    """A speaker playing into a virtual source."""
    source = VirtualSource()
    return AgentSpeaker(source=source), source
