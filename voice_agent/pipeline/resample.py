"""Streaming resampling of int16 PCM: room 48 kHz <-> STT 16 kHz <-> the TTS voice's native rate.

Built on `livekit.rtc.AudioResampler` rather than the `soxr` package: both run libsoxr (LiveKit's
native library links it and exposes its quality recipes), but LiveKit's is already a dependency and
already loaded by every agent worker, so this adds no package, and its input and output are the
int16 interleaved bytes the rest of the pipeline uses. The cost is one FFI round trip a push,
about 20 µs for a 10 ms frame, which is far below the audio it carries.

The resampler keeps its filter state across pushes, so chunked input gives the same output as one
push, to within the ±1 LSB of dither that libsoxr adds to int16 output. It holds back a few
milliseconds (the filter's delay) until `flush`, which ends the stream and leaves the resampler
ready for the next one (for example the next TTS utterance).
"""

from __future__ import annotations

import enum

from livekit import rtc

__all__ = ["ResampleQuality", "StreamResampler"]

_BYTES_PER_SAMPLE = 2


class ResampleQuality(enum.StrEnum):
    """libsoxr's quality recipes; MEDIUM is ample for speech."""

    QUICK = "quick"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    VERY_HIGH = "very_high"


class StreamResampler:
    """Resamples a stream of int16 little-endian PCM, keeping filter state between pushes."""

    def __init__(
        self,
        *,
        input_rate: int,
        output_rate: int,
        channels: int = 1,
        quality: ResampleQuality = ResampleQuality.MEDIUM,
    ) -> None:
        if input_rate <= 0 or output_rate <= 0:
            raise ValueError("sample rates must be positive")
        if channels < 1:
            raise ValueError("channels must be at least 1")
        self._input_rate = input_rate
        self._output_rate = output_rate
        self._channels = channels
        self._quality = rtc.AudioResamplerQuality(quality.value)
        self._frame_bytes = channels * _BYTES_PER_SAMPLE
        self._partial = bytearray()  # bytes short of a whole sample frame
        self._resampler: rtc.AudioResampler | None = None

    @property
    def input_rate(self) -> int:
        """Sample rate of the audio pushed in, in Hz."""
        return self._input_rate

    @property
    def output_rate(self) -> int:
        """Sample rate of the audio returned, in Hz."""
        return self._output_rate

    @property
    def channels(self) -> int:
        """Interleaved channels in and out."""
        return self._channels

    def push(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Resample a piece of the stream; returns what is ready (possibly b"")."""
        self._partial += pcm
        usable = len(self._partial) // self._frame_bytes * self._frame_bytes
        if usable == 0:
            return b""
        data = self._partial[:usable]
        del self._partial[:usable]
        if self._input_rate == self._output_rate:
            return bytes(data)
        return _join(self._engine().push(data))

    def flush(self) -> bytes:
        """End the stream: returns the held-back tail; the next push starts a new stream."""
        self._partial.clear()  # a trailing half sample is not audio
        if self._resampler is None:
            return b""
        tail = _join(self._resampler.flush())
        self._resampler = None  # streams stay independent; a new engine costs ~30 µs
        return tail

    def _engine(self) -> rtc.AudioResampler:
        if self._resampler is None:
            self._resampler = rtc.AudioResampler(
                self._input_rate,
                self._output_rate,
                num_channels=self._channels,
                quality=self._quality,
            )
        return self._resampler


def _join(frames: list[rtc.AudioFrame]) -> bytes:
    return b"".join(frame.data.cast("B") for frame in frames)
