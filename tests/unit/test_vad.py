"""VoiceActivityDetector: real Silero on real espeak-ng speech; its state machine on a fake."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voice_agent.pipeline.vad import VadConfig, VadEvent, VadEventType, VoiceActivityDetector
from voice_agent.pipeline.vad_model import SAMPLE_RATE, SileroVadModel, SpeechProbabilityModel

START, END = VadEventType.SPEECH_START, VadEventType.SPEECH_END
Pcm = npt.NDArray[np.int16]


def _espeak(text: str, wav: Path) -> Pcm:
    """Speak `text` with espeak-ng into a WAV, then convert it to 16 kHz mono int16 with sox."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    assert espeak, "espeak-ng (a Debian package) makes the test speech"
    assert sox, "sox (a Debian package) converts the test speech"
    subprocess.run([espeak, "-w", str(wav), text], check=True)
    to_raw = ["-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed", "-b", "16", "-c", "1", "-"]
    raw = subprocess.run([sox, str(wav), *to_raw], check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2").astype(np.int16)


@pytest.fixture(scope="module")
def speak(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Pcm]:
    """Make real speech for a sentence (cached per module)."""
    directory = tmp_path_factory.mktemp("speech")
    cache: dict[str, Pcm] = {}

    def make(text: str) -> Pcm:
        if text not in cache:
            cache[text] = _espeak(text, directory / f"{len(cache)}.wav")
        return cache[text]

    return make


def _silence(seconds: float) -> Pcm:
    return np.zeros(round(seconds * SAMPLE_RATE), dtype=np.int16)


def _voiced_extent(pcm: Pcm) -> tuple[float, float]:
    """First and last sample louder than -40 dBFS, in seconds: where the speech really is."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 328)
    return loud[0] / SAMPLE_RATE, (loud[-1] + 1) / SAMPLE_RATE


def _run(
    pcm: Pcm, *, frame_samples: int = 320, vad: VoiceActivityDetector | None = None
) -> list[VadEvent]:
    """Push the audio in room-sized frames and flush."""
    vad = vad if vad is not None else VoiceActivityDetector()
    data = pcm.tobytes()
    step = frame_samples * 2
    events: list[VadEvent] = []
    for i in range(0, len(data), step):
        events += vad.push(data[i : i + step])
    return events + vad.flush()


SENTENCE = "Hello there, I would like to book a table for two people tonight."


def test_silence_gives_no_events() -> None:
    """Five seconds of digital silence produce no event."""
    assert _run(_silence(5.0)) == []


def test_one_utterance_gives_one_start_and_one_end_at_plausible_times(
    speak: Callable[[str], Pcm],
) -> None:
    """Speech between two seconds of silence gives START then END near the real speech edges."""
    utterance = speak(SENTENCE)
    on, off = _voiced_extent(utterance)
    events = _run(np.concatenate([_silence(1.0), utterance, _silence(1.5)]))

    assert [e.type for e in events] == [START, END]
    start, end = events
    assert start.start_s == pytest.approx(1.0 + on, abs=0.1)
    assert start.emitted_at_s >= start.start_s + 0.25
    assert start.emitted_at_s <= start.start_s + 0.5
    assert end.end_s is not None
    assert end.end_s == pytest.approx(1.0 + off, abs=0.15)
    assert end.trailing_silence_s >= 0.5
    assert end.emitted_at_s <= end.end_s + 0.6


def test_speech_end_carries_the_segment_with_pre_roll(speak: Callable[[str], Pcm]) -> None:
    """The SPEECH_END audio starts 200 ms before the onset and holds the whole utterance."""
    utterance = speak(SENTENCE)
    stream = np.concatenate([_silence(1.0), utterance, _silence(1.0)])
    end = _run(stream)[-1]

    assert end.type is END
    assert end.end_s is not None
    assert end.audio_start_sample == end.speech_start_sample - round(0.2 * SAMPLE_RATE)
    assert end.audio_duration_s == pytest.approx(end.end_s - end.start_s + 0.2 + 0.1, abs=0.002)
    segment = np.frombuffer(end.audio, dtype="<i2")
    lo = end.audio_start_sample
    assert np.array_equal(segment, stream[lo : lo + len(segment)])
    on, off = _voiced_extent(utterance)
    assert end.audio_start_sample / SAMPLE_RATE <= 1.0 + on
    assert (end.audio_start_sample + len(segment)) / SAMPLE_RATE >= 1.0 + off - 0.1


def test_two_utterances_one_second_apart_give_two_segments(speak: Callable[[str], Pcm]) -> None:
    """Two sentences separated by one second of silence are two START/END pairs."""
    first, second = speak(SENTENCE), speak("And could we sit by the window, please?")
    events = _run(np.concatenate([_silence(0.5), first, _silence(1.0), second, _silence(1.0)]))

    assert [e.type for e in events] == [START, END, START, END]
    first_end, second_start = events[1], events[2]
    assert first_end.end_s is not None
    assert second_start.start_s - first_end.end_s >= 0.9


def test_a_100ms_burst_does_not_start_speech(speak: Callable[[str], Pcm]) -> None:
    """The loudest 100 ms of a spoken word, alone in silence, emits nothing."""
    word = speak("Hello")
    on, _ = _voiced_extent(word)
    burst = word[round(on * SAMPLE_RATE) :][: SAMPLE_RATE // 10]
    assert _run(np.concatenate([_silence(1.0), burst, _silence(1.0)])) == []


def test_white_noise_gives_no_long_speech_segment() -> None:
    """Three seconds of white noise at -20 dBFS RMS never make a segment longer than 300 ms."""
    rng = np.random.default_rng(7)
    noise = np.clip(rng.normal(0.0, 0.1 * 32767, 3 * SAMPLE_RATE), -32768, 32767).astype(np.int16)
    events = _run(np.concatenate([_silence(0.5), noise, _silence(1.0)]))
    ends = [e for e in events if e.type is END]
    assert all(e.audio_duration_s < 0.3 + 0.3 for e in ends)
    assert sum((e.end_s or 0.0) - e.start_s for e in ends) < 0.3


def test_frame_size_does_not_change_the_events(speak: Callable[[str], Pcm]) -> None:
    """Room frames, odd byte counts and one big push all give the same events."""
    stream = np.concatenate([_silence(0.5), speak(SENTENCE), _silence(1.0)])
    reference = _run(stream)
    data = stream.tobytes()

    odd = VoiceActivityDetector()
    odd_events: list[VadEvent] = []
    for i in range(0, len(data), 333):
        odd_events += odd.push(data[i : i + 333])
    odd_events += odd.flush()

    whole = VoiceActivityDetector()
    assert odd_events == reference
    assert whole.push(stream.data) + whole.flush() == reference


def test_speaking_state_and_duration_follow_ongoing_speech(speak: Callable[[str], Pcm]) -> None:
    """While the user talks, `speaking` is true and `speech_duration_s` grows; after, both reset."""
    utterance = speak(SENTENCE)
    vad = VoiceActivityDetector()
    vad.push(_silence(0.5).tobytes())
    assert not vad.speaking
    assert vad.speech_duration_s == 0.0
    started = vad.push(utterance[:SAMPLE_RATE].tobytes())
    assert [e.type for e in started] == [START]
    assert vad.speaking
    first = vad.speech_duration_s
    assert 0.25 <= first <= 1.0
    vad.push(utterance[SAMPLE_RATE : 2 * SAMPLE_RATE].tobytes())
    assert vad.speech_duration_s == pytest.approx(first + 1.0, abs=0.04)
    vad.push(utterance[2 * SAMPLE_RATE :].tobytes())
    ended = vad.push(_silence(1.0).tobytes())
    assert [e.type for e in ended] == [END]
    assert not vad.speaking
    assert vad.speech_duration_s == 0.0
    assert vad.probability < 0.35
    assert vad.stream_time_s == pytest.approx(0.5 + len(utterance) / SAMPLE_RATE + 1.0, abs=0.04)


def test_flush_ends_speech_that_is_still_going(speak: Callable[[str], Pcm]) -> None:
    """A stream that stops mid-sentence still gets its SPEECH_END, and the detector resets."""
    vad = VoiceActivityDetector()
    utterance = speak(SENTENCE)
    events = vad.push(np.concatenate([_silence(0.5), utterance[: 2 * SAMPLE_RATE]]).tobytes())
    assert [e.type for e in events] == [START]
    (end,) = vad.flush()
    assert end.type is END
    assert end.audio
    assert not vad.speaking
    assert vad.stream_time_s == 0.0


class CountingModel:
    """The shipped Silero model, counting the windows it scores."""

    def __init__(self) -> None:
        self._model = SileroVadModel()
        self.window_samples = self._model.window_samples
        self.calls = 0

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        self.calls += 1
        return self._model.probability(window)

    def reset(self) -> None:
        self._model.reset()


@pytest.mark.parametrize("frame_samples", [160, 320, 480, 1024])
def test_each_window_is_scored_once_whatever_the_frame_size(
    speak: Callable[[str], Pcm], frame_samples: int
) -> None:
    """The model scores each 32 ms window at most once, however the audio is framed.

    That is the VAD's whole cost (silent windows below the energy floor are not scored at all);
    its speed is not asserted here, as timing on these shared machines is noise.
    """
    stream = np.concatenate([speak(SENTENCE), _silence(0.5)] * 3)
    whole_windows, framed = CountingModel(), CountingModel()
    _run(stream, frame_samples=512, vad=VoiceActivityDetector(model=whole_windows))
    _run(stream, frame_samples=frame_samples, vad=VoiceActivityDetector(model=framed))
    assert 0 < framed.calls == whole_windows.calls <= len(stream) // 512


def test_silero_model_satisfies_the_protocol() -> None:
    """The shipped model is a SpeechProbabilityModel with 32 ms windows."""
    model = SileroVadModel()
    assert isinstance(model, SpeechProbabilityModel)
    assert model.window_samples == 512
    assert 0.0 <= model.probability(np.zeros(512, dtype=np.float32)) <= 0.2


# --- the state machine, on a scripted model: exact sample positions -----------------------------


class ScriptedModel:
    """Returns the given probabilities, one per window, then 0.0."""

    window_samples = 512

    def __init__(self, probabilities: Sequence[float]) -> None:
        self._script = list(probabilities)
        self.calls = 0
        self.resets = 0

    def probability(self, window: npt.NDArray[np.float32]) -> float:
        assert window.shape == (512,)
        assert window.dtype == np.float32
        p = self._script[self.calls] if self.calls < len(self._script) else 0.0
        self.calls += 1
        return p

    def reset(self) -> None:
        self.resets += 1


def _scripted(probs: Sequence[float], config: VadConfig | None = None) -> list[VadEvent]:
    vad = VoiceActivityDetector(config=config, model=ScriptedModel(probs))
    ramp = (np.arange(len(probs) * 512) % 30000).astype(np.int16)
    return vad.push(ramp.tobytes())


W = 512


def test_start_is_emitted_once_min_speech_is_voiced() -> None:
    """With 250 ms minimum, START comes after 8 voiced windows, stamped at the onset window."""
    events = _scripted([0.0] * 3 + [0.9] * 10)
    assert len(events) == 1
    assert events[0].type is START
    assert events[0].speech_start_sample == 3 * W
    assert events[0].emitted_at_sample == 11 * W


def test_end_is_emitted_after_min_silence_with_exact_positions() -> None:
    """END comes after 16 unvoiced windows (>= 500 ms), ending at the last voiced window."""
    events = _scripted([0.0] * 10 + [0.9] * 10 + [0.1] * 20)
    assert [e.type for e in events] == [START, END]
    end = events[1]
    assert end.speech_start_sample == 10 * W
    assert end.speech_end_sample == 20 * W
    assert end.emitted_at_sample == 36 * W
    assert end.audio_start_sample == 10 * W - 3200
    assert len(end.audio) == 2 * (20 * W + 1600 - (10 * W - 3200))


def test_probability_between_thresholds_keeps_speech_going() -> None:
    """Hysteresis: 0.4 (below activation, above deactivation) neither starts nor ends speech."""
    assert _scripted([0.4] * 30) == []
    events = _scripted([0.9] * 10 + [0.4] * 30 + [0.0] * 20)
    assert [e.type for e in events] == [START, END]
    assert events[1].speech_end_sample == 40 * W


def test_separate_clicks_do_not_add_up_to_speech() -> None:
    """Voiced windows split by gaps longer than 100 ms never reach SPEECH_START."""
    assert _scripted(([0.9] * 4 + [0.0] * 4) * 10) == []


def test_a_short_dip_in_the_first_syllable_keeps_the_onset() -> None:
    """A 64 ms dip inside the onset does not move the START timestamp."""
    events = _scripted([0.0] + [0.9] * 3 + [0.0] * 2 + [0.9] * 6)
    assert [e.type for e in events] == [START]
    assert events[0].speech_start_sample == W


def test_pre_roll_is_clamped_at_the_stream_start() -> None:
    """Speech from the first sample gets a segment starting at sample 0."""
    events = _scripted([0.9] * 10 + [0.0] * 20)
    assert events[1].audio_start_sample == 0


def test_long_speech_keeps_at_most_max_segment_of_audio() -> None:
    """An utterance longer than max_segment_ms keeps only its latest audio."""
    config = VadConfig(max_segment_ms=1000)
    events = _scripted([0.9] * 100 + [0.0] * 20, config)
    end = events[-1]
    assert end.type is END
    assert end.audio_duration_s <= 1.0 + 0.1 + 0.001
    assert end.speech_start_sample == 0
    assert end.audio_start_sample > 0


def test_reset_clears_state_and_model() -> None:
    """reset() forgets ongoing speech and resets the model's recurrent state."""
    model = ScriptedModel([0.9] * 20)
    vad = VoiceActivityDetector(model=model)
    vad.push((np.arange(20 * W) % 30000).astype(np.int16).tobytes())
    assert vad.speaking
    vad.reset()
    assert not vad.speaking
    assert vad.stream_time_s == 0.0
    assert model.resets == 1


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"activation_threshold": 0.3, "deactivation_threshold": 0.5}, "threshold"),
        ({"activation_threshold": 1.0}, "threshold"),
        ({"min_speech_ms": -1}, "negative"),
        ({"post_roll_ms": 600}, "post_roll_ms"),
        ({"max_segment_ms": 100}, "max_segment_ms"),
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, Any], reason: str) -> None:
    """Inconsistent thresholds or durations raise ValueError at construction."""
    with pytest.raises(ValueError, match=reason):
        VadConfig(**kwargs)


def test_windows_below_the_silence_floor_skip_the_model() -> None:
    """Digital silence is scored 0 without the model; audio above the floor is scored by it."""
    model = ScriptedModel([0.9] * 40)
    vad = VoiceActivityDetector(model=model)
    vad.push(bytes(10 * W * 2))
    assert model.calls == 0
    hiss = (np.random.default_rng(1).normal(0, 100, 10 * W)).astype(np.int16)  # about -50 dBFS
    vad.push(hiss.tobytes())
    assert model.calls == 10
    ungated = VoiceActivityDetector(
        model=ScriptedModel([0.9] * 40), config=VadConfig(silence_floor_dbfs=None)
    )
    ungated.push(bytes(10 * W * 2))
    assert ungated.speaking


def test_voiced_time_stops_growing_in_the_silence_after_speech(speak: Callable[[str], Pcm]) -> None:
    """`voiced_s` runs from the onset to the last voiced window: trailing silence adds nothing,
    while `speech_duration_s` keeps counting until SPEECH_END."""
    vad = VoiceActivityDetector()
    vad.push(_silence(0.5).tobytes())
    vad.push(speak(SENTENCE)[:SAMPLE_RATE].tobytes())
    assert vad.speaking
    voiced = vad.voiced_s
    assert 0.25 <= voiced <= 1.0
    vad.push(_silence(0.3).tobytes())  # shorter than min_silence_ms: still speaking
    assert vad.speaking
    assert vad.voiced_s == pytest.approx(voiced, abs=0.04)
    assert vad.speech_duration_s == pytest.approx(voiced + 0.3, abs=0.1)
