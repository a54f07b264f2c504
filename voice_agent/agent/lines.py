"""Lines the agent must be able to say whatever fails: synthesised before they are needed.

The fallback line ("Sorry, I'm having trouble..."), the goodbye and the apology for repeated
failures are rendered to room-rate PCM when a call starts, so they play even while TTS is down.
The worker shares one `SpokenLines` among its calls: the lines are rendered by the first call
(the same text in the same voice sounds the same on every call) and a line that failed is tried
again by the next one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

from voice_agent.agent.speaker import ROOM_RATE
from voice_agent.exceptions import ProviderError
from voice_agent.logging import get_logger
from voice_agent.pipeline.resample import StreamResampler
from voice_agent.providers.base import TTS

log = get_logger("agent.lines")


class LineName(StrEnum):
    """The fixed lines."""

    FALLBACK = "fallback"  # a stage failed: "Sorry, I'm having trouble right now..."
    GOODBYE = "goodbye"  # the call is over (time limit, a silent caller)
    FAILURE_GOODBYE = "failure_goodbye"  # too many failed turns: apologise and hang up


@dataclass
class SpokenLines:
    """The texts of the fixed lines and, once synthesised, their audio at the room rate."""

    texts: dict[LineName, str]
    audio: dict[LineName, bytes] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def synthesize(self, tts: TTS, *, timeout_s: float) -> None:
        """Render every line not rendered yet; a line that fails is logged and stays unavailable
        until a later call tries again. Concurrent calls render each line once."""
        async with self._lock:
            await self._render_missing(tts, timeout_s)

    async def _render_missing(self, tts: TTS, timeout_s: float) -> None:
        for name, text in self.texts.items():
            if name in self.audio:
                continue
            try:
                chunks = []
                async with asyncio.timeout(timeout_s):
                    async for audio in tts.synthesize(text):
                        chunks.append(audio)
                rate = chunks[0].sample_rate if chunks else ROOM_RATE
                resampler = StreamResampler(input_rate=rate, output_rate=ROOM_RATE)
                pcm = b"".join(resampler.push(c.data) for c in chunks) + resampler.flush()
                self.audio[name] = pcm
            except (ProviderError, TimeoutError) as e:
                log.error("call.line_synthesis_failed", line=name, error=str(e))
