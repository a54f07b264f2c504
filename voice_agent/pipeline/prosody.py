"""How a stretch of speech ends in pitch: falling to a close, or held up for more.

English marks a finished statement with a final fall, the voice settling near the bottom of the
speaker's range, and an item of a list or a clause that goes on with a level or rising pitch
("I need eggs, ..."). The words alone cannot tell "I need eggs." from "I need eggs, milk and
bread" at the first pause; `final_pitch` measures what the voice did.

Pitch comes from YIN (de Cheveigné and Kawahara, 2002): per 40 ms frame, the cumulative mean
normalised difference function, its first dip under a threshold taken as the period (which
keeps it off the octave below), refined by parabolic interpolation. It runs on the last 2.5 s
of the turn with numpy in about 5 ms per second of audio on this machine: a dependency for
it (a Praat binding, librosa with numba) would cost the worker more memory than the whole
feature, and only a coarse contour is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PitchEnding", "final_pitch", "pitch_track"]

SAMPLE_RATE = 16000
_FRAME = 640  # 40 ms: over two periods of the lowest voice tracked
_HOP = 160  # 10 ms
_MIN_HZ, _MAX_HZ = 60.0, 400.0
_THRESHOLD = 0.25  # YIN's absolute threshold on the normalised difference
_MIN_RMS = 200.0  # int16 units: quieter frames are not voiced speech
_ANALYSED_S = 2.5  # the turn's last seconds are enough for its range and its end
_END_S = 0.08  # the end: the last voiced 80 ms
_MIN_VOICED = 20  # frames (200 ms) of voiced speech before there is anything to judge


@dataclass(frozen=True, slots=True)
class PitchEnding:
    """The pitch at the end of the speech against the speaker's own range, in semitones."""

    end_st: float
    """The last voiced 80 ms, in semitones above (+) or below (-) the median of the speech."""
    low_st: float
    """The 10th percentile of the speech, against the same median: where the range ends."""

    @property
    def falls(self) -> bool:
        """Whether the speech ends on a fall: at least half-way from its median down to the
        bottom of its range, and at least a semitone below the median."""
        return self.end_st <= min(-1.0, self.low_st / 2)


def pitch_track(pcm: bytes) -> np.ndarray:
    """F0 in Hz per 10 ms frame of 16 kHz mono int16 `pcm`; NaN where it is not voiced."""
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    if x.size < _FRAME * 2:
        return np.empty(0, dtype=np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(x, _FRAME * 2)[::_HOP]
    frames = frames - frames.mean(axis=1, keepdims=True)
    max_lag = int(SAMPLE_RATE / _MIN_HZ)
    min_lag = int(SAMPLE_RATE / _MAX_HZ)
    # The difference function d(t) = sum (x_j - x_{j+t})^2 over a window of _FRAME samples,
    # from the autocorrelation (by FFT) and the running energies.
    window = frames[:, :_FRAME]
    size = 1 << int(np.ceil(np.log2(_FRAME * 3)))
    spectrum = np.conj(np.fft.rfft(window, size)) * np.fft.rfft(frames, size)
    cross = np.fft.irfft(spectrum, size)[:, : max_lag + 1]  # sum x_j x_{j+t}
    squares = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    lags = np.arange(max_lag + 1)
    energy_0 = squares[:, _FRAME][:, None]
    energy_t = squares[:, lags + _FRAME] - squares[:, lags]
    diff = np.maximum(energy_0 + energy_t - 2 * cross, 0.0)
    diff[:, 0] = 0.0
    # Cumulative mean normalised difference.
    running = np.cumsum(diff[:, 1:], axis=1) / lags[1:]
    cmnd = np.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] / np.maximum(running, 1e-9)
    rms = np.sqrt(np.mean(window**2, axis=1))
    band = cmnd[:, min_lag:max_lag]
    under = band < _THRESHOLD
    voiced = under.any(axis=1) & (rms >= _MIN_RMS)
    # The first dip under the threshold, followed down to its bottom (the first local minimum
    # from where it goes under).
    first = under.argmax(axis=1)
    columns = np.arange(1, band.shape[1] - 1)
    minimum = (band[:, 1:-1] <= band[:, :-2]) & (band[:, 1:-1] <= band[:, 2:])
    minimum &= columns >= first[:, None]
    t = np.where(minimum.any(axis=1), columns[minimum.argmax(axis=1)], first)
    t = np.clip(t, 1, band.shape[1] - 2)
    t = t + min_lag
    rows = np.arange(len(frames))
    a, b, c = cmnd[rows, t - 1], cmnd[rows, t], cmnd[rows, t + 1]
    curve = a - 2 * b + c
    shift = np.where(curve > 0, 0.5 * (a - c) / np.where(curve > 0, curve, 1.0), 0.0)
    f0 = np.where(voiced, SAMPLE_RATE / (t + shift), np.nan).astype(np.float32)
    return f0


def final_pitch(pcm: bytes) -> PitchEnding | None:
    """How the speech in `pcm` (16 kHz mono int16) ends in pitch, or None with too little
    voiced speech to say."""
    tail = pcm[-int(_ANALYSED_S * SAMPLE_RATE) * 2 :]
    f0 = pitch_track(tail)
    voiced = np.flatnonzero(~np.isnan(f0))
    if voiced.size < _MIN_VOICED:
        return None
    semitones = 12 * np.log2(f0[voiced] / np.median(f0[voiced]))
    end_frames = voiced >= voiced[-1] - int(_END_S * 100) + 1
    return PitchEnding(
        end_st=float(np.median(semitones[end_frames])),
        low_st=float(np.percentile(semitones, 10)),
    )
