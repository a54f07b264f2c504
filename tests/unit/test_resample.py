"""StreamResampler: frequency and duration survive resampling, and chunking changes nothing."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voice_agent.pipeline.resample import ResampleQuality, StreamResampler

RATES = [
    (48_000, 16_000),
    (16_000, 48_000),
    (16_000, 22_050),
    (22_050, 48_000),
    (24_000, 48_000),
    (48_000, 24_000),
]


def _sine(rate: int, seconds: float = 1.0, freq: float = 440.0) -> npt.NDArray[np.int16]:
    t = np.arange(round(rate * seconds)) / rate
    return (0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def _peak_hz(samples: npt.NDArray[np.int16], rate: int) -> float:
    """Frequency of the strongest FFT bin (Hann window, zero-padded to 1 Hz bins or finer)."""
    windowed = samples.astype(np.float64) * np.hanning(len(samples))
    n = max(len(samples), rate)
    spectrum = np.abs(np.fft.rfft(windowed, n=n))
    return float(np.argmax(spectrum) * rate / n)


def _resample(resampler: StreamResampler, data: bytes, chunk: int) -> npt.NDArray[np.int16]:
    out = bytearray()
    for i in range(0, len(data), chunk):
        out += resampler.push(data[i : i + chunk])
    out += resampler.flush()
    return np.frombuffer(bytes(out), dtype="<i2").astype(np.int16)


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_a_sine_keeps_its_frequency_and_duration(src: int, dst: int) -> None:
    """440 Hz stays 440 Hz (within 1 Hz) and one second stays one second (within 2 ms)."""
    resampler = StreamResampler(input_rate=src, output_rate=dst)
    out = _resample(resampler, _sine(src).tobytes(), chunk=src // 50 * 2)  # 20 ms frames
    assert abs(len(out) / dst - 1.0) <= 0.002
    assert _peak_hz(out, dst) == pytest.approx(440.0, abs=1.0)
    # The level is kept too: RMS of a 0.5-amplitude sine, away from the edges.
    middle = out[dst // 10 : -dst // 10].astype(np.float64) / 32767
    assert np.sqrt(np.mean(middle**2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


@pytest.mark.parametrize(("src", "dst"), RATES)
def test_chunked_input_gives_the_same_output_as_one_push(src: int, dst: int) -> None:
    """20 ms frames, odd byte counts and a single push produce the same samples."""
    data = _sine(src, seconds=0.7, freq=1000.0).tobytes()
    whole = _resample(StreamResampler(input_rate=src, output_rate=dst), data, chunk=len(data))
    for chunk in (src // 50 * 2, 333, 7):
        chunked = _resample(StreamResampler(input_rate=src, output_rate=dst), data, chunk=chunk)
        assert len(chunked) == len(whole)
        # libsoxr dithers int16 output: equal within a least significant bit or two.
        assert np.max(np.abs(chunked.astype(np.int32) - whole.astype(np.int32))) <= 2


def test_flush_ends_one_stream_and_the_next_starts_clean() -> None:
    """After flush the resampler takes a new stream, which comes out like a fresh resampler's."""
    data = _sine(48_000, seconds=0.5).tobytes()
    reused = StreamResampler(input_rate=48_000, output_rate=16_000)
    first = _resample(reused, data, chunk=960)
    second = _resample(reused, data, chunk=960)
    assert len(first) == len(second) == 8000
    # libsoxr dithers its int16 output, so samples may differ by a least significant bit or two.
    assert np.max(np.abs(first.astype(np.int32) - second.astype(np.int32))) <= 2
    assert reused.flush() == b""


def test_output_lags_until_flush() -> None:
    """A small push may return little or nothing; flush delivers the held-back tail."""
    resampler = StreamResampler(input_rate=48_000, output_rate=16_000)
    head = resampler.push(_sine(48_000, seconds=0.01).tobytes())
    tail = resampler.flush()
    assert len(head) < 320
    assert len(head) + len(tail) == 320


def test_equal_rates_pass_audio_through_unchanged() -> None:
    """Same rate in and out returns the very samples, without delay."""
    data = _sine(16_000, seconds=0.1).tobytes()
    resampler = StreamResampler(input_rate=16_000, output_rate=16_000)
    assert resampler.push(data[:101]) + resampler.push(data[101:]) == data
    assert resampler.flush() == b""


def test_stereo_is_resampled_per_channel() -> None:
    """Interleaved stereo keeps each channel's own frequency."""
    left, right = _sine(48_000, freq=440.0), _sine(48_000, freq=1000.0)
    stereo = np.column_stack([left, right]).reshape(-1).tobytes()
    resampler = StreamResampler(input_rate=48_000, output_rate=16_000, channels=2)
    out = _resample(resampler, stereo, chunk=1922).reshape(-1, 2)
    assert len(out) == pytest.approx(16_000, abs=32)
    assert _peak_hz(out[:, 0], 16_000) == pytest.approx(440.0, abs=1.0)
    assert _peak_hz(out[:, 1], 16_000) == pytest.approx(1000.0, abs=1.0)


@pytest.mark.parametrize("quality", list(ResampleQuality))
def test_every_quality_recipe_works(quality: ResampleQuality) -> None:
    """Each libsoxr recipe keeps the frequency and the length."""
    resampler = StreamResampler(input_rate=16_000, output_rate=24_000, quality=quality)
    out = _resample(resampler, _sine(16_000).tobytes(), chunk=640)
    assert len(out) == 24_000
    assert _peak_hz(out, 24_000) == pytest.approx(440.0, abs=1.0)


def test_properties_report_the_configuration() -> None:
    """input_rate, output_rate and channels are what was asked for."""
    resampler = StreamResampler(input_rate=48_000, output_rate=22_050, channels=2)
    assert (resampler.input_rate, resampler.output_rate, resampler.channels) == (48_000, 22_050, 2)


@pytest.mark.parametrize(
    ("src", "dst", "channels"), [(0, 16_000, 1), (16_000, -1, 1), (16_000, 48_000, 0)]
)
def test_invalid_arguments_are_rejected(src: int, dst: int, channels: int) -> None:
    """Non-positive rates or channel counts raise ValueError."""
    with pytest.raises(ValueError, match="must be"):
        StreamResampler(input_rate=src, output_rate=dst, channels=channels)
