"""A reply spoken aloud: each chunk through TTS into the agent's audio track.

`SpokenOutput` is the `ReplyOutput` of a voice call. It synthesises chunk after chunk, tags the
audio with the chunk's index, and answers how much of each chunk the caller has heard from the
speaker's playout accounting, so a barge-in records the reply cut at what was really played. It
stamps the turn's TTS timings (request start, first byte) and sums the speech synthesised.

A speculative reply's output is held (`release` not yet set): the first chunk is synthesised and
kept, nothing reaches the speaker (not even `begin_reply`, which would reset the accounting of a
sound still playing) until the turn is committed and the gate opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from voice_agent import tracing
from voice_agent.agent.metrics import TurnTimer
from voice_agent.agent.speaker import AgentSpeaker
from voice_agent.providers.base import TTS

# A chunk is heard whole when at most this much of its end is missing (the last frame's padding).
_WHOLE_TOLERANCE_S = 0.03


class SpokenOutput:
    """Speaks a reply's chunks through `tts` into `speaker`."""

    def __init__(
        self,
        *,
        speaker: AgentSpeaker,
        tts: TTS,
        timer: TurnTimer,
        release: asyncio.Event | None = None,
    ) -> None:
        self._speaker = speaker
        self._tts = tts
        self._timer = timer
        self._audio_s: dict[int, float] = {}
        self._release = release
        self._on_first_output: Callable[[float], None] | None = None
        self._begun = release is None

    @property
    def audio_s(self) -> float:
        """Seconds of speech synthesised so far."""
        return sum(self._audio_s.values())

    def begin(self, on_first_output: Callable[[float], None]) -> None:
        """A new reply: call back when its first sound reaches the room."""
        if self._begun:
            self._speaker.begin_reply(on_first_output)
        else:  # held: the speaker is told once the gate opens
            self._on_first_output = on_first_output

    async def _released(self) -> None:
        """Until a held output may play; the speaker's new reply begins then."""
        if self._release is not None:
            await self._release.wait()
        if not self._begun:
            self._begun = True
            self._speaker.begin_reply(self._on_first_output)

    async def say(self, text: str, index: int) -> None:
        """Synthesise chunk `index` and queue its audio; raises the provider's error."""
        samples = 0
        rate = self._tts.capabilities.sample_rate
        if self._timer.tts_started is None:
            self._timer.tts_started = time.monotonic()
        kept: list[tuple[bytes, int]] = []  # audio synthesised while the output is held
        with tracing.span("tts", chunk=index, chars=len(text)):
            async with contextlib.aclosing(self._tts.synthesize(text)) as stream:
                async for audio in stream:
                    if samples == 0 and self._timer.tts_first_byte is None:
                        self._timer.tts_first_byte = time.monotonic()
                    samples += audio.sample_count
                    rate = audio.sample_rate
                    if self._release is not None and not self._release.is_set():
                        kept.append((audio.data, rate))
                        continue
                    await self._play_kept(kept, index)
                    self._speaker.push(audio.data, sample_rate=rate, segment=index)
        await self._play_kept(kept, index)
        self._speaker.end_segment(index)
        self._audio_s[index] = samples / rate

    async def _play_kept(self, kept: list[tuple[bytes, int]], index: int) -> None:
        await self._released()
        for data, rate in kept:
            self._speaker.push(data, sample_rate=rate, segment=index)
        kept.clear()

    def heard(self, index: int) -> float:
        """How much of chunk `index` the caller has heard, from 0 to 1."""
        total = self._audio_s.get(index, 0.0)
        played = self._speaker.played_seconds(index)
        if total <= 0 or played <= 0:
            return 0.0
        return 1.0 if played >= total - _WHOLE_TOLERANCE_S else played / total

    async def finish(self) -> None:
        """Until everything queued has been played out (or dropped by a barge-in)."""
        await self._released()
        await self._speaker.wait_idle()
