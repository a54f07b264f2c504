"""Test doubles shipped with the package: a scripted OpenAI-compatible server and a stand-in tone.

The provider fakes (`FakeSTT`, `FakeLLM`, `FakeTTS`) live with the providers, in
`voice_agent.providers.fake`.
"""

from voice_agent.testing.openai_script import (
    ChatReply,
    DefaultPacing,
    ErrorReply,
    Hang,
    ScriptedToolCall,
    SpeechReply,
    Timeline,
    TranscriptionReply,
)
from voice_agent.testing.scripted_openai import (
    CHAT_PATH,
    MODELS_PATH,
    SPEECH_PATH,
    SPEECH_SAMPLE_RATE,
    TRANSCRIPTIONS_PATH,
    RecordedRequest,
    ScriptedOpenAI,
)
from voice_agent.testing.tone import speech_duration_s, tone

__all__ = [
    "CHAT_PATH",
    "MODELS_PATH",
    "SPEECH_PATH",
    "SPEECH_SAMPLE_RATE",
    "TRANSCRIPTIONS_PATH",
    "ChatReply",
    "DefaultPacing",
    "ErrorReply",
    "Hang",
    "RecordedRequest",
    "ScriptedOpenAI",
    "ScriptedToolCall",
    "SpeechReply",
    "Timeline",
    "TranscriptionReply",
    "speech_duration_s",
    "tone",
]
