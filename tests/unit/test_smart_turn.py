"""Smart Turn: its features, the acoustic and hybrid detectors, the fallbacks and the weights."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from structlog.testing import capture_logs

from voice_agent.agent.options import SessionOptions, session_options
from voice_agent.agent.session import _turn_detector, needed_turn_models
from voice_agent.exceptions import TurnModelError
from voice_agent.logging import get_logger
from voice_agent.pipeline.acoustic_turn import HybridTurnDetector, SmartTurnDetector
from voice_agent.pipeline.completeness import TranscriptTurnDetector
from voice_agent.pipeline.smart_turn import (
    HOP,
    SAMPLE_RATE,
    EndOfTurnModel,
    SmartTurnModels,
    log_mel,
    mel_filters,
    model_window,
)
from voice_agent.pipeline.smart_turn_weights import (
    MODEL_MEMBER,
    WHEEL_FILE,
    default_model_path,
    fetch_turn_model,
    model_path,
)
from voice_agent.pipeline.turn import TurnEvidence, close_detector, listen_ahead
from voice_agent.settings import Settings

WINDOW = 8 * SAMPLE_RATE
AUDIO = b"\x01\x00" * 1600  # 0.1 s of (almost) silence: the fake models ignore it


def _tone(hz: float, seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


# Features


def test_log_mel_has_the_model_input_shape_for_eight_seconds() -> None:
    """8 s at 16 kHz give 80 mel bins by 800 frames (hop 160, Whisper's last frame dropped)."""
    assert log_mel(np.zeros(WINDOW, dtype=np.float32)).shape == (80, WINDOW // HOP)


def test_a_tone_peaks_in_the_mel_bin_around_its_frequency() -> None:
    """A 1 kHz tone's energy lands in the bin whose filter is strongest at 1 kHz, and the
    scale is Whisper's: the peak 8 decades (2 after scaling) above the floor at most."""
    features = log_mel(_tone(1000.0, 2.0))
    filters = mel_filters(80)
    bin_1k = round(1000.0 / (SAMPLE_RATE / 400))  # the STFT bin at 1 kHz (40 Hz apart)
    middle = features[:, features.shape[1] // 2]
    assert int(np.argmax(middle)) == int(np.argmax(filters[:, bin_1k]))
    assert features.max() - features.min() == pytest.approx(2.0, abs=1e-5)


def test_log_mel_matches_whisper_reference_features() -> None:
    """The numpy features equal faster-whisper's extractor (Whisper's own recipe) on noise."""
    feature_extractor = pytest.importorskip("faster_whisper.feature_extractor")
    samples = np.random.default_rng(3).normal(0, 0.1, WINDOW).astype(np.float32)
    reference = feature_extractor.FeatureExtractor()(samples, padding=0)
    np.testing.assert_allclose(log_mel(samples), reference, atol=1e-4)


def test_model_window_pads_short_turns_at_the_front_and_normalises() -> None:
    """A short turn sits at the end of the window after zeros; the window has zero mean and
    unit variance; a long turn keeps only its last samples."""
    pcm = (np.arange(1, 1001, dtype=np.int16) * 30).tobytes()
    window = model_window(pcm, samples=4000)
    assert window.shape == (4000,)
    assert np.allclose(window[:3000], window[0])  # the padding: one value after normalising
    assert window[-1] > window[3000] > window[0]
    assert window.mean() == pytest.approx(0.0, abs=1e-5)
    assert window.std() == pytest.approx(1.0, abs=1e-3)
    tail = model_window(pcm, samples=10)
    expected = np.arange(991, 1001, dtype=np.float32) * 30 / 32768
    expected = (expected - expected.mean()) / np.sqrt(expected.var() + 1e-7)
    np.testing.assert_allclose(tail, expected, atol=1e-3)


# Detectors with a fake model


class FakeModel:
    """Answers a fixed probability (or fails), and counts the questions."""

    def __init__(self, p: float | None) -> None:
        self.p = p
        self.asked = 0

    async def end_probability(self, pcm: bytes) -> float:
        self.asked += 1
        if self.p is None:
            raise TurnModelError("broken model file")
        return self.p


def _smart(p: float | None) -> tuple[SmartTurnDetector, FakeModel]:
    model = FakeModel(p)
    detector = SmartTurnDetector(
        model=model, threshold=0.5, silence_ms=500, incomplete_silence_ms=1500
    )
    return detector, model


def _hybrid_with(model: EndOfTurnModel, **settings: Any) -> HybridTurnDetector:
    """A hybrid detector on `model`: a 500 ms fallback, 1.5 s for unfinished words, 700 ms when
    unsure, unless `settings` say otherwise."""
    defaults: dict[str, Any] = {
        "threshold": 0.5,
        "silence_ms": 500,
        "incomplete_silence_ms": 1500,
        "unsure_silence_ms": 700,
    }
    return HybridTurnDetector(model=model, **{**defaults, **settings})


def _hybrid(p: float | None) -> tuple[HybridTurnDetector, FakeModel]:
    model = FakeModel(p)
    return _hybrid_with(model), model


async def test_smart_turn_ends_the_turn_at_the_threshold() -> None:
    """P(end) equal to the threshold ends the turn now, with the probability in the decision."""
    detector, _ = _smart(0.5)
    decision = await detector.decide(TurnEvidence(trailing_silence_s=0.2, audio=AUDIO))
    assert decision.end_of_turn
    assert decision.probability == 0.5
    assert decision.reason == "model_complete"


async def test_smart_turn_below_the_threshold_waits_for_the_long_silence() -> None:
    """Just under the threshold the turn waits until eou_incomplete_ms of silence, then ends."""
    detector, _ = _smart(0.4999)
    waiting = await detector.decide(TurnEvidence(trailing_silence_s=0.2, audio=AUDIO))
    assert not waiting.end_of_turn
    assert waiting.recheck_after_s == pytest.approx(1.3)
    late = await detector.decide(TurnEvidence(trailing_silence_s=1.5, audio=AUDIO))
    assert late.end_of_turn
    assert late.reason == "model_incomplete_silence"


async def test_smart_turn_does_not_ask_while_the_caller_speaks() -> None:
    """Speech in progress is never the end of a turn, and costs no model run."""
    detector, model = _smart(0.99)
    decision = await detector.decide(TurnEvidence(speaking=True, audio=AUDIO))
    assert not decision.end_of_turn
    assert model.asked == 0


async def test_hybrid_ends_at_once_when_words_and_model_agree() -> None:
    """Complete words and P(end) at the threshold: end of turn now."""
    detector, model = _hybrid(0.5)
    evidence = TurnEvidence(transcript="Where is my order?", trailing_silence_s=0.2, audio=AUDIO)
    decision = await detector.decide(evidence)
    assert decision.end_of_turn
    assert decision.reason == "complete"
    assert model.asked == 1


async def test_hybrid_waits_the_unsure_silence_when_the_model_disagrees() -> None:
    """Complete words but P(end) just under the threshold: wait until 700 ms of silence."""
    detector, _ = _hybrid(0.4999)
    evidence = TurnEvidence(transcript="Where is my order?", trailing_silence_s=0.2, audio=AUDIO)
    decision = await detector.decide(evidence)
    assert not decision.end_of_turn
    assert decision.reason == "unsure"
    assert decision.recheck_after_s == pytest.approx(0.5)


async def test_hybrid_waits_as_the_rules_do_on_unfinished_words_without_the_model() -> None:
    """Unfinished words wait eou_incomplete_ms whatever the model would say; it is not run."""
    detector, model = _hybrid(0.99)
    evidence = TurnEvidence(transcript="My account number is", trailing_silence_s=0.2, audio=AUDIO)
    decision = await detector.decide(evidence)
    assert not decision.end_of_turn
    assert decision.recheck_after_s == pytest.approx(1.3)
    assert model.asked == 0


async def test_hybrid_without_words_waits_the_silence_rule() -> None:
    """No transcript: the silence rule's eou_silence_ms, as the transcript detector does."""
    detector, model = _hybrid(0.99)
    decision = await detector.decide(TurnEvidence(trailing_silence_s=0.2, audio=AUDIO))
    assert not decision.end_of_turn
    assert decision.recheck_after_s == pytest.approx(0.3)
    assert model.asked == 0


async def test_a_failing_model_leaves_the_decision_to_the_rules() -> None:
    """A model that cannot run: both detectors decide as the transcript rules would."""
    for detector in (_smart(None)[0], _hybrid(None)[0]):
        done = await detector.decide(
            TurnEvidence(transcript="Where is my order?", trailing_silence_s=0.2, audio=AUDIO)
        )
        assert done.end_of_turn
        assert done.reason == "model_failed_complete"
        held = await detector.decide(
            TurnEvidence(transcript="I was wondering if", trailing_silence_s=0.2, audio=AUDIO)
        )
        assert not held.end_of_turn
        assert held.recheck_after_s == pytest.approx(1.3)


async def test_hybrid_keeps_the_rules_commit_silence_when_both_agree() -> None:
    """Words and model agree before the commit silence has passed: wait out its remainder."""
    model = FakeModel(0.9)
    detector = _hybrid_with(model, unsure_silence_ms=1500, complete_silence_ms=250)
    early = await detector.decide(
        TurnEvidence(transcript="Where is my order?", trailing_silence_s=0.15, audio=AUDIO)
    )
    assert (early.end_of_turn, early.reason, early.probability) == (False, "complete_short", 0.9)
    assert early.recheck_after_s == pytest.approx(0.1)


async def test_hybrid_reads_a_missing_final_mark_as_unfinished_when_the_stt_punctuates() -> None:
    """With a punctuating STT, "I was wondering" (Whisper's hearing of "I was wondering if")
    waits as unfinished words do, and the model is not asked."""
    model = FakeModel(0.99)
    detector = _hybrid_with(model, unsure_silence_ms=1500, punctuated=True)
    evidence = TurnEvidence(transcript="I was wondering", trailing_silence_s=0.2, audio=AUDIO)
    decision = await detector.decide(evidence)
    assert (decision.end_of_turn, decision.reason) == (False, "incomplete")
    assert decision.recheck_after_s == pytest.approx(1.3)
    assert model.asked == 0


class GatedModel(FakeModel):
    """A model whose answer waits for `release`: it is running while the words are unknown."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.release = asyncio.Event()

    async def end_probability(self, pcm: bytes) -> float:
        self.asked += 1
        await self.release.wait()
        return self.p or 0.0


async def test_hybrid_listens_ahead_while_the_words_are_transcribed() -> None:
    """`listen_ahead` starts the model on the turn's audio at the pause; `decide` on the same
    audio uses that run instead of starting another."""
    model = GatedModel(0.8)
    detector = _hybrid_with(model)
    ahead = listen_ahead(detector, AUDIO)
    assert ahead is not None
    await asyncio.sleep(0)
    assert model.asked == 1  # running before any words are known
    model.release.set()
    evidence = TurnEvidence(transcript="Where is my order?", trailing_silence_s=0.3, audio=AUDIO)
    decision = await detector.decide(evidence)
    assert (decision.end_of_turn, decision.probability) == (True, 0.8)
    assert model.asked == 1


async def test_closing_the_hybrid_cancels_a_model_run_no_decision_took() -> None:
    """The call ends while the model listened ahead (the caller hung up in the pause): closing
    the detector cancels that run instead of leaving it pending past the call."""
    model = GatedModel(0.8)
    detector = _hybrid_with(model)
    ahead = listen_ahead(detector, AUDIO)
    assert isinstance(ahead, asyncio.Future)
    await asyncio.sleep(0)
    close_detector(detector)
    await asyncio.sleep(0)
    assert ahead.cancelled()
    close_detector(detector)  # twice is harmless
    close_detector(TranscriptTurnDetector())  # a detector without close() is left alone


async def test_hybrid_asks_again_for_audio_it_did_not_listen_ahead_to() -> None:
    """Audio other than the one listened ahead to (the caller went on): the early run is
    dropped and the model asked about the audio decided on."""
    heard: list[int] = []

    class ByLength(FakeModel):
        async def end_probability(self, pcm: bytes) -> float:
            heard.append(len(pcm))
            return 0.9 if len(pcm) > len(AUDIO) else 0.1

    detector = _hybrid_with(ByLength(None))
    listen_ahead(detector, AUDIO)
    longer = AUDIO + AUDIO
    evidence = TurnEvidence(transcript="Where is my order?", trailing_silence_s=0.3, audio=longer)
    decision = await detector.decide(evidence)
    assert (decision.end_of_turn, decision.probability) == (True, 0.9)
    assert heard[-1] == len(longer)


def test_detectors_without_an_acoustic_model_ignore_listen_ahead() -> None:
    """The transcript and silence detectors have nothing to start early."""
    assert listen_ahead(TranscriptTurnDetector(), AUDIO) is None


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"stt": "local"}, True),  # Whisper on this machine always punctuates
        ({"stt": "auto"}, True),  # no key: Whisper on this machine
        ({"stt": "auto", "openai_api_key": "sk-test"}, None),  # a remote STT: learned
        ({"stt": "openai", "openai_api_key": "sk-test"}, None),
        ({"stt": "openai", "openai_api_key": "sk-test", "stt_punctuates": False}, False),
        ({"stt": "local", "stt_punctuates": True}, True),
    ],
)
def test_auto_punctuation_is_known_for_local_whisper_and_learned_otherwise(
    values: dict[str, object], expected: bool | None
) -> None:
    """`VOICE_AGENT_STT_PUNCTUATES=auto` resolves per STT; an explicit value is kept."""
    settings = Settings(_env_file=None, **values)  # type: ignore[arg-type]
    assert session_options(settings).stt_punctuates is expected


# Fallback when the model is missing


def _options(detector: str, model: Path) -> SessionOptions:
    return SessionOptions(
        instructions="be brief", greeting="hi", turn_detector=detector, smart_turn_model=model
    )


@pytest.mark.parametrize("detector", ["smart_turn", "hybrid"])
def test_a_missing_model_falls_back_to_the_transcript_detector(detector: str) -> None:
    """No model file: the transcript detector decides and a turn.model_unavailable warning
    names the detector and the path."""
    missing = Path(tempfile.mkdtemp()) / "absent.onnx"
    options = _options(detector, missing)
    with capture_logs() as logs:
        chosen = _turn_detector(options, needed_turn_models(options), get_logger("test"))
    assert isinstance(chosen, TranscriptTurnDetector)
    (warning,) = [e for e in logs if e["event"] == "turn.model_unavailable"]
    assert warning["log_level"] == "warning"
    assert warning["detector"] == detector
    assert warning["path"] == str(missing)


def test_a_present_model_file_gives_the_acoustic_detector(tmp_path: Path) -> None:
    """With a model file (loaded later, lazily) the named acoustic detector is used."""
    if not _runtime():
        pytest.skip("onnxruntime is not installed (the local extra)")
    (tmp_path / "m.onnx").write_bytes(b"not loaded yet")
    chosen = _turn_detector(
        _options("hybrid", tmp_path / "m.onnx"),
        SmartTurnModels(tmp_path / "m.onnx"),
        get_logger("test"),
    )
    assert isinstance(chosen, HybridTurnDetector)


def _runtime() -> bool:
    from voice_agent.pipeline.smart_turn import runtime_available

    return runtime_available()


async def test_loading_a_missing_or_broken_model_is_a_turn_model_error(tmp_path: Path) -> None:
    """A missing file, or one that is not ONNX, raises TurnModelError from load."""
    with pytest.raises(TurnModelError):
        await SmartTurnModels(tmp_path / "absent.onnx").load()
    if _runtime():
        (tmp_path / "bad.onnx").write_bytes(b"not a model")
        with pytest.raises(TurnModelError):
            await SmartTurnModels(tmp_path / "bad.onnx").load()


async def test_prewarm_warns_and_reports_a_model_it_cannot_load(tmp_path: Path) -> None:
    """At worker start a missing (or broken) model is a turn.model_unavailable warning, not a
    crash; the calls then fall back to the rules."""
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    for path in (tmp_path / "absent.onnx", tmp_path / "bad.onnx"):
        with capture_logs() as logs:
            assert await SmartTurnModels(path).prewarm(get_logger("test")) is False
        assert [e["event"] for e in logs] == ["turn.model_unavailable"]


def test_the_model_path_is_under_the_user_cache_unless_set(tmp_path: Path) -> None:
    """$XDG_CACHE_HOME/voice-agent/models/ by default; VOICE_AGENT_SMART_TURN_MODEL wins."""
    cached = Settings(_env_file=None, xdg_cache_home=tmp_path)
    assert model_path(cached) == tmp_path / "voice-agent" / "models" / "smart-turn-v3.2-cpu.onnx"
    assert default_model_path(None).parts[-4:-1] == (".cache", "voice-agent", "models")
    chosen = Settings(_env_file=None, xdg_cache_home=tmp_path, smart_turn_model=tmp_path / "m")
    assert model_path(chosen) == tmp_path / "m"


# Fetching the weights


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeIndex:
    """Stands in for pip: writes a wheel holding `model` bytes, counting downloads."""

    def __init__(self, model: bytes) -> None:
        self.model = model
        self.downloads = 0

    def __call__(self, directory: Path) -> None:
        self.downloads += 1
        with zipfile.ZipFile(directory / WHEEL_FILE, "w") as wheel:
            wheel.writestr(MODEL_MEMBER, self.model)
            wheel.writestr("pipecat/__init__.py", "")

    def wheel_sha(self) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            self(Path(tmp))
            self.downloads -= 1
            return _sha((Path(tmp) / WHEEL_FILE).read_bytes())


def test_fetch_extracts_only_the_checked_model_once(tmp_path: Path) -> None:
    """The model is extracted alone into the target; a second fetch downloads nothing."""
    index = FakeIndex(b"onnx weights")
    target = tmp_path / "models" / "smart-turn.onnx"
    pins = {"wheel_sha256": index.wheel_sha(), "model_sha256": _sha(b"onnx weights")}
    assert fetch_turn_model(target, download=index, **pins) is True
    assert target.read_bytes() == b"onnx weights"
    assert sorted(p.name for p in target.parent.iterdir()) == ["smart-turn.onnx"]
    assert fetch_turn_model(target, download=index, **pins) is False
    assert index.downloads == 1


def test_fetch_refuses_a_wheel_or_model_whose_checksum_does_not_match(tmp_path: Path) -> None:
    """A wheel or a model that is not the pinned one is an error naming it; nothing is kept."""
    index = FakeIndex(b"tampered weights")
    target = tmp_path / "models" / "smart-turn.onnx"
    with pytest.raises(TurnModelError, match="is not the pinned"):
        fetch_turn_model(target, download=index, wheel_sha256="0" * 64, model_sha256="0" * 64)
    with pytest.raises(TurnModelError, match=r"smart-turn-v3\.2-cpu\.onnx: sha256"):
        fetch_turn_model(
            target, download=index, wheel_sha256=index.wheel_sha(), model_sha256="0" * 64
        )
    assert list(target.parent.iterdir()) == []


def test_fetch_replaces_a_corrupt_model(tmp_path: Path) -> None:
    """A model file with the wrong checksum is fetched again and replaced."""
    index = FakeIndex(b"good weights")
    target = tmp_path / "smart-turn.onnx"
    target.write_bytes(b"truncated")
    pins = {"wheel_sha256": index.wheel_sha(), "model_sha256": _sha(b"good weights")}
    assert fetch_turn_model(target, download=index, **pins) is True
    assert target.read_bytes() == b"good weights"


# The real model on real speech (needs `voice-agent fetch-turn-model`; setup runs it)

REAL_MODEL = model_path(Settings(_env_file=None))


@pytest.mark.skipif(
    not REAL_MODEL.is_file(),
    reason=f"no Smart Turn model at {REAL_MODEL}: run `voice-agent fetch-turn-model`",
)
async def test_the_real_model_hears_a_finished_question_and_an_unfinished_clause() -> None:
    """Piper's "What are your opening hours?" sounds finished (P >= 0.5) and "I was wondering
    if" does not; the input shape is read from the model (80 x 800)."""
    pytest.importorskip("onnxruntime")
    local_tts = pytest.importorskip("voice_agent.providers.local_tts")
    from voice_agent.pipeline.resample import StreamResampler

    settings = Settings(_env_file=None, data_dir=Path(tempfile.mkdtemp()))
    piper = local_tts.PiperTTS.from_settings(settings)

    async def speech(text: str) -> bytes:
        resampler: StreamResampler | None = None
        parts = []
        async for chunk in piper.synthesize(text):
            if resampler is None:
                resampler = StreamResampler(input_rate=chunk.sample_rate, output_rate=SAMPLE_RATE)
            parts.append(resampler.push(chunk.data))
        assert resampler is not None
        return b"".join([*parts, resampler.flush()])

    shared = SmartTurnModels(REAL_MODEL)
    assert await shared.prewarm(get_logger("test")) is True
    assert shared.load_ms is not None
    model = await shared.load()
    assert (model.n_mels, model.frames) == (80, 800)
    finished = await model.end_probability(await speech("What are your opening hours?"))
    unfinished = await model.end_probability(await speech("I was wondering if"))
    assert 0.5 <= finished <= 1.0
    assert 0.0 <= unfinished < 0.5


def test_options_carry_the_model_settings() -> None:
    """The session options take the threshold, the unsure wait and the model path."""
    from voice_agent.agent.options import session_options

    settings = Settings(
        _env_file=None,
        turn_detector="hybrid",
        smart_turn_threshold=0.7,
        eou_unsure_ms=900,
        smart_turn_model=Path("/m.onnx"),
    )
    options = session_options(settings)
    assert (options.turn_detector, options.smart_turn_threshold) == ("hybrid", 0.7)
    assert (options.eou_unsure_ms, options.smart_turn_model) == (900, Path("/m.onnx"))
    assert needed_turn_models(options) is not None
    assert needed_turn_models(dataclasses.replace(options, turn_detector="transcript")) is None


def test_the_fetch_command_reports_where_the_model_is_and_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`voice-agent fetch-turn-model` fetches into $XDG_CACHE_HOME and says where; a failed
    fetch (no network, wrong checksum) is exit code 1 with the reason."""
    from voice_agent import cli
    from voice_agent.pipeline import smart_turn_weights

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    asked: list[Path] = []

    def fetched(target: Path) -> bool:
        asked.append(target)
        return True

    monkeypatch.setattr(smart_turn_weights, "fetch_turn_model", fetched)
    assert cli.main(["fetch-turn-model"]) == 0
    assert asked == [tmp_path / "voice-agent" / "models" / "smart-turn-v3.2-cpu.onnx"]
    assert f"fetched to {asked[0]}" in capsys.readouterr().out

    def offline(target: Path) -> bool:
        raise TurnModelError("pip download of pipecat-ai 1.14.0 failed: no network")

    monkeypatch.setattr(smart_turn_weights, "fetch_turn_model", offline)
    assert cli.main(["fetch-turn-model"]) == 1
    assert "cannot fetch the turn model: pip download" in capsys.readouterr().err
