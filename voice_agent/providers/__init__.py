"""Model providers: one module per vendor and capability, behind the interfaces in `base`.

`openai_stt`, `openai_llm`, `openai_tts` talk to OpenAI or any OpenAI-compatible server;
`fake` holds scripted fakes for unit tests.
"""

from voice_agent.chat import ChatMessage, Role, ToolCall
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
    "ChatMessage",
    "LLMCapabilities",
    "LLMDelta",
    "PcmAudio",
    "Provider",
    "Role",
    "STTCapabilities",
    "TTSCapabilities",
    "ToolCall",
    "Transcript",
    "TranscriptEvent",
    "Usage",
]
