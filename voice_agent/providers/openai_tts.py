"""TTS through an OpenAI-compatible `audio/speech` endpoint, streamed as raw 24 kHz PCM."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from voice_agent.providers.base import SAMPLE_WIDTH, TTS, PcmAudio, TTSCapabilities
from voice_agent.providers.openai_connection import OpenAIConnection, translate_errors
from voice_agent.settings import Settings

PROVIDER = "openai.tts"
SAMPLE_RATE = 24_000  # what `response_format="pcm"` always carries: 24 kHz s16le mono


class OpenAITTS(TTS):
    """Yields speech chunks as the server sends them, each a whole number of samples."""

    def __init__(self, *, connection: OpenAIConnection, model: str, voice: str) -> None:
        self.capabilities = TTSCapabilities(streaming=True, sample_rate=SAMPLE_RATE)
        self.model = model
        self.voice = voice
        self._client = connection.client()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAITTS:
        """The TTS model and voice the settings name, on the configured OpenAI connection."""
        return cls(
            connection=OpenAIConnection.from_settings(settings),
            model=settings.tts_model,
            voice=settings.tts_voice,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def synthesize(self, text: str) -> AsyncGenerator[PcmAudio, None]:
        """Stream speech for `text`; chunk sizes follow the network, not sample boundaries."""
        # An odd trailing byte waits for its other half; one left over at the end is dropped.
        carry = b""
        with translate_errors(PROVIDER):
            async with self._client.audio.speech.with_streaming_response.create(
                model=self.model,
                voice=self.voice,
                input=text,
                response_format="pcm",
            ) as response:
                async for chunk in response.iter_bytes():
                    data = carry + chunk
                    whole = len(data) - len(data) % SAMPLE_WIDTH
                    carry = data[whole:]
                    if whole:
                        yield PcmAudio(data=data[:whole], sample_rate=SAMPLE_RATE)
