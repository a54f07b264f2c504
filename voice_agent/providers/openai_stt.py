"""STT through an OpenAI-compatible `audio/transcriptions` endpoint, one VAD segment a request."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence

import openai
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from openai.types.audio.transcription_language import TranscriptionLanguage

from voice_agent.exceptions import ProviderResponseError
from voice_agent.providers.base import STT, PcmAudio, STTCapabilities, Transcript, TranscriptEvent
from voice_agent.providers.openai_connection import OpenAIConnection, translate_errors
from voice_agent.settings import Settings

PROVIDER = "openai.stt"
# Models that stream their transcript; whisper-1 and most local servers answer in one piece.
STREAMING_MODEL_PREFIXES = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe", "gpt-transcribe")


class OpenAISTT(STT):
    """Sends each segment as a WAV file; streams the transcript back where the model can."""

    def __init__(
        self, *, connection: OpenAIConnection, model: str, streaming: bool | None = None
    ) -> None:
        """`streaming` None infers from the model name whether it streams its transcript."""
        if streaming is None:
            streaming = model.startswith(STREAMING_MODEL_PREFIXES)
        self.capabilities = STTCapabilities(streaming=streaming, interim_results=streaming)
        self.model = model
        self._client = connection.client()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAISTT:
        """The STT `VOICE_AGENT_STT_MODEL` names, on the configured OpenAI connection."""
        return cls(connection=OpenAIConnection.from_settings(settings), model=settings.stt_model)

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.close()

    async def transcribe(self, audio: PcmAudio, *, language: str | None = None) -> Transcript:
        """Transcribe one segment in a single request."""
        with translate_errors(PROVIDER):
            result = await self._client.audio.transcriptions.create(
                file=_wav_file(audio),
                model=self.model,
                language=language or openai.omit,
                response_format="json",
            )
        return Transcript(
            text=result.text.strip(),
            language=language or _first_language(result.languages),
            duration_s=audio.duration_s,
        )

    async def transcribe_stream(
        self, audio: PcmAudio, *, language: str | None = None
    ) -> AsyncGenerator[TranscriptEvent, None]:
        """Interim text as the model produces it, then the final transcript."""
        if not self.capabilities.streaming:
            yield TranscriptEvent.final(await self.transcribe(audio, language=language))
            return
        text = ""
        with translate_errors(PROVIDER):
            events = await self._client.audio.transcriptions.create(
                file=_wav_file(audio),
                model=self.model,
                language=language or openai.omit,
                stream=True,
            )
            async with events:
                async for event in events:
                    if isinstance(event, TranscriptionTextDeltaEvent) and event.delta:
                        text += event.delta
                        yield TranscriptEvent.interim(text.strip())
                    elif isinstance(event, TranscriptionTextDoneEvent):
                        yield TranscriptEvent.final(
                            Transcript(
                                text=event.text.strip(),
                                language=language or _first_language(event.languages),
                                duration_s=audio.duration_s,
                            )
                        )
                        return
        raise ProviderResponseError(
            f"{PROVIDER}: the transcript stream ended without a final transcript",
            provider=PROVIDER,
        )


def _wav_file(audio: PcmAudio) -> tuple[str, bytes, str]:
    # A file name with an extension and a content type let the server identify the format.
    return ("segment.wav", audio.to_wav(), "audio/wav")


def _first_language(languages: Sequence[TranscriptionLanguage] | None) -> str | None:
    return languages[0].code if languages else None
