"""Model providers: one module per vendor and capability, behind the interfaces in `base`.

`openai_stt`, `openai_llm`, `openai_tts` talk to OpenAI or any OpenAI-compatible server;
`local_stt`, `local_tts` run speech on this machine; `fallback` and `retry` wrap any of them;
`fake` holds scripted fakes for unit tests. The messages an LLM takes are `voice_agent.chat`'s.
"""

from voice_agent.providers.base import (
    LLM,
    STT,
    TTS,
    LLMCapabilities,
    LLMDelta,
    PcmAudio,
    Provider,
    STTCapabilities,
    Transcript,
    TranscriptEvent,
    TTSCapabilities,
    Usage,
)

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "LLMCapabilities",
    "LLMDelta",
    "PcmAudio",
    "Provider",
    "STTCapabilities",
    "TTSCapabilities",
    "Transcript",
    "TranscriptEvent",
    "Usage",
]
