"""STT through an OpenAI-compatible `audio/transcriptions` endpoint, one VAD segment a request."""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, Sequence
from typing import Any

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
# Models that return their tokens' log probabilities when asked (`include=["logprobs"]`);
# whisper-1 refuses the parameter, and local servers mostly ignore it.
LOGPROB_MODEL_PREFIXES = STREAMING_MODEL_PREFIXES


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
        self._include: list[Any] | openai.Omit = (
            ["logprobs"] if model.startswith(LOGPROB_MODEL_PREFIXES) else openai.omit
        )
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
                include=self._include,
            )
        return Transcript(
            text=result.text.strip(),
            language=language or _first_language(result.languages),
            duration_s=audio.duration_s,
            confidence=confidence_of(result.logprobs),
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
                include=self._include,
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
                                confidence=confidence_of(event.logprobs),
                            )
                        )
                        return
        raise ProviderResponseError(
            f"{PROVIDER}: the transcript stream ended without a final transcript",
            provider=PROVIDER,
        )


def confidence_of(logprobs: Sequence[Any] | None) -> float | None:
    """How sure the model is of the words: the geometric mean of its tokens' probabilities (the
    exponent of their mean log probability), as local Whisper's score is; None when the server
    gave none."""
    values = [item.logprob for item in logprobs or () if item.logprob is not None]
    if not values:
        return None
    return math.exp(min(sum(values) / len(values), 0.0))


def _wav_file(audio: PcmAudio) -> tuple[str, bytes, str]:
    # A file name with an extension and a content type let the server identify the format.
    return ("segment.wav", audio.to_wav(), "audio/wav")


def _first_language(languages: Sequence[TranscriptionLanguage] | None) -> str | None:
    return languages[0].code if languages else None
