"""Smart Turn v3.2: an acoustic end-of-turn model, P(the caller has finished) from the audio.

The model (Daily's Smart Turn v3.2, BSD-2-Clause, the CPU build shipped inside the `pipecat-ai`
wheel) reads Whisper-style log-mel features of the last 8 s of the turn and answers one
probability. Its weights are fetched once by `voice-agent fetch-turn-model`
(`smart_turn_weights.py`) and read from disk; nothing is downloaded here.

The features are computed here in numpy: 16 kHz audio normalised to zero mean and unit variance,
zero-padded at the front to the model's window, a periodic Hann STFT (n_fft 400, hop 160,
reflect-padded at both ends, the last frame dropped as Whisper does), 80 Slaney mel bins,
log10, floored 8 below the peak and scaled to about [-1, 1]. The window and the bins come from
the model's input shape (`input_features`: batch x 80 x 800, which is 8 s).

onnxruntime comes with the `local` extra (faster-whisper needs it); without it, or without the
file, the model is unavailable and the session falls back to the transcript detector.

Memory: by default onnxruntime keeps an arena sized for the largest run and malloc keeps what
the encoder's activations freed, about 40 MB more per worker than the session needs. The session
runs without the arena and the memory pattern, and after each run freed heap memory is handed
back to the system (`malloc_trim`, glibc only): measured on this model, the worker holds about
48 MB for it instead of 77-86 MB, and a run takes no longer.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import importlib.util
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from voice_agent.exceptions import TurnModelError
from voice_agent.logging import Logger

__all__ = [
    "EndOfTurnModel",
    "SmartTurnModel",
    "SmartTurnModels",
    "log_mel",
    "mel_filters",
    "model_window",
]

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
_FLOAT = npt.NDArray[np.float32]


def _malloc_trim() -> Any:
    """glibc's `malloc_trim`, or a no-op where the C library has none (musl, macOS)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return lambda _pad: 0


_TRIM = _malloc_trim()


class EndOfTurnModel(Protocol):
    """Anything that hears a turn and says how likely it is over (the real model or a fake)."""

    async def end_probability(self, pcm: bytes) -> float:
        """P(end of turn) for the turn's audio (16 kHz mono int16), without blocking the loop."""
        ...


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear to 1 kHz (3 mels per 200 Hz), logarithmic above."""
    linear = hz * 3.0 / 200.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-9) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(hz < 1000.0, linear, logarithmic)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    linear = mel * 200.0 / 3.0
    logarithmic = 1000.0 * np.exp((mel - 15.0) * np.log(6.4) / 27.0)
    return np.where(mel < 15.0, linear, logarithmic)


def mel_filters(n_mels: int = 80) -> npt.NDArray[np.float64]:
    """Triangular mel filters over the STFT's bins, each normalised to constant energy."""
    bins_hz = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    top = _hz_to_mel(np.array([SAMPLE_RATE / 2.0]))[0]
    edges = _mel_to_hz(np.linspace(0.0, top, n_mels + 2))
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins_hz[None, :] - low) / (centre - low)
    falling = (high - bins_hz[None, :]) / (high - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (high - low))


_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)
_MEL_CACHE: dict[int, npt.NDArray[np.float64]] = {}


def model_window(pcm: bytes, *, samples: int) -> _FLOAT:
    """The last `samples` of the turn as floats, zero-padded at the front, then normalised to
    zero mean and unit variance (over the padded window, as the model was trained)."""
    audio = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype=np.int16)[-samples:]
    window = np.zeros(samples, dtype=np.float32)
    if audio.size:
        window[-audio.size :] = audio.astype(np.float32) / 32768.0
    centred = window - window.mean()
    normalised: _FLOAT = (centred / np.sqrt(centred.var() + 1e-7)).astype(np.float32)
    return normalised


def log_mel(samples: _FLOAT, *, n_mels: int = 80) -> _FLOAT:
    """Whisper's log-mel spectrogram of 16 kHz samples: n_mels x (len // HOP) frames."""
    padded = np.pad(samples.astype(np.float64), N_FFT // 2, mode="reflect")
    count = 1 + (padded.size - N_FFT) // HOP
    starts = HOP * np.arange(count)[:, None]
    frames = padded[starts + np.arange(N_FFT)[None, :]] * _WINDOW
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    filters = _MEL_CACHE.get(n_mels)
    if filters is None:
        filters = _MEL_CACHE[n_mels] = mel_filters(n_mels)
    mel = filters @ power[:-1].T  # Whisper drops the frame centred past the end
    logs = np.log10(np.maximum(mel, 1e-10))
    logs = np.maximum(logs, logs.max() - 8.0)
    scaled: _FLOAT = ((logs + 4.0) / 4.0).astype(np.float32)
    return scaled


class SmartTurnModel:
    """A loaded Smart Turn session (thread-safe: onnxruntime sessions may run concurrently)."""

    def __init__(self, session: Any, *, path: Path) -> None:
        self._session = session
        self.path = path
        inputs = session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3:
            raise TurnModelError(f"{path}: expected one input of batch x mels x frames")
        self._input = str(inputs[0].name)
        _, mels, frames = inputs[0].shape
        if not isinstance(mels, int) or not isinstance(frames, int):
            raise TurnModelError(f"{path}: the input's mels and frames must be fixed")
        self.n_mels, self.frames = mels, frames
        self.window_samples = frames * HOP

    @classmethod
    def load(cls, path: Path, *, threads: int = 1) -> SmartTurnModel:
        """Open the ONNX file on the CPU with `threads` intra-op threads (blocking; ~0.1 s)."""
        if not path.is_file():
            raise TurnModelError(f"no end-of-turn model at {path} (voice-agent fetch-turn-model)")
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]  # ships no type information
        except ImportError as e:
            raise TurnModelError("onnxruntime is not installed (the `local` extra)") from e
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False  # see the module docstring, "Memory"
        options.enable_mem_pattern = False
        try:
            session = ort.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as e:  # onnxruntime raises its own untyped errors for a bad file
            raise TurnModelError(f"{path}: cannot load the end-of-turn model: {e}") from e
        return cls(session, path=path)

    def features(self, pcm: bytes) -> _FLOAT:
        """The model's input for a turn: 1 x mels x frames."""
        window = model_window(pcm, samples=self.window_samples)
        return log_mel(window, n_mels=self.n_mels)[None, :, : self.frames]

    def probability(self, pcm: bytes) -> float:
        """P(end of turn) for the turn's audio (blocking: call it in a thread)."""
        (output,) = self._session.run(None, {self._input: self.features(pcm)})
        p = float(np.asarray(output).reshape(-1)[0])
        del output
        _TRIM(0)  # hand the activations' freed memory back (see the module docstring)
        return p

    async def end_probability(self, pcm: bytes) -> float:
        """P(end of turn), computed in a thread so the event loop never waits on it."""
        return await asyncio.to_thread(self.probability, pcm)


def runtime_available() -> bool:
    """Whether onnxruntime can be imported (without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


class SmartTurnModels:
    """The worker's one Smart Turn model, loaded (and warmed up) once, in a thread, on first
    use or at worker start (`load`), and shared by its calls."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self.path = path
        self._threads = threads
        self._model: SmartTurnModel | None = None
        self._loading: asyncio.Lock | None = None
        self.load_ms: float | None = None
        """How long loading and the warm-up run took, once loaded."""

    @property
    def available(self) -> bool:
        """Whether the model can be loaded: its file is there and onnxruntime is installed."""
        return self._model is not None or (self.path.is_file() and runtime_available())

    def _load_blocking(self) -> SmartTurnModel:
        started = time.perf_counter()
        model = SmartTurnModel.load(self.path, threads=self._threads)
        model.probability(b"")  # the first run allocates and plans: not a caller's turn
        self.load_ms = (time.perf_counter() - started) * 1000
        return model

    async def load(self) -> SmartTurnModel:
        """The loaded model; raises `TurnModelError` when it cannot be loaded."""
        if self._model is not None:
            return self._model
        if self._loading is None:
            self._loading = asyncio.Lock()
        async with self._loading:
            if self._model is None:
                self._model = await asyncio.to_thread(self._load_blocking)
        return self._model

    async def prewarm(self, log: Logger) -> bool:
        """Load and warm up now (at worker start), so no caller's turn waits for it; False,
        with a `turn.model_unavailable` warning, when the model cannot be loaded."""
        if not self.available:
            log.warning("turn.model_unavailable", path=str(self.path), error="no file or runtime")
            return False
        try:
            await self.load()
        except TurnModelError as e:
            log.warning("turn.model_unavailable", path=str(self.path), error=str(e))
            return False
        log.info("turn.model_loaded", path=str(self.path), load_ms=round(self.load_ms or 0))
        return True

    async def end_probability(self, pcm: bytes) -> float:
        """P(end of turn) from the shared model (loaded first if need be)."""
        model = await self.load()
        return await model.end_probability(pcm)
