"""Build the STT, LLM and TTS a worker uses from the settings (`VOICE_AGENT_STT/LLM/TTS`)."""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.providers.base import LLM, STT, TTS
from voice_agent.providers.openai_llm import OpenAILLM
from voice_agent.providers.openai_stt import OpenAISTT
from voice_agent.providers.openai_tts import OpenAITTS
from voice_agent.settings import LLMProviderKind, Settings, STTProviderKind, TTSProviderKind


@dataclass(frozen=True, kw_only=True)
class Providers:
    """The models a call uses; shared by every call of a worker process."""

    stt: STT
    llm: LLM
    tts: TTS

    async def aclose(self) -> None:
        """Close all three."""
        for provider in (self.stt, self.llm, self.tts):
            await provider.aclose()


def build_providers(settings: Settings) -> Providers:
    """The configured providers; a `ConfigError` names what is missing.

    The local providers are imported only when chosen: their packages are an optional extra.
    """
    stt: STT
    llm: LLM
    tts: TTS
    match settings.stt_provider:
        case STTProviderKind.OPENAI:
            stt = OpenAISTT.from_settings(settings)
        case STTProviderKind.LOCAL:
            from voice_agent.providers.local_stt import LocalWhisperSTT

            stt = LocalWhisperSTT.from_settings(settings)
    match settings.llm_provider:
        case LLMProviderKind.OPENAI:
            llm = OpenAILLM.from_settings(settings)
    match settings.tts_provider:
        case TTSProviderKind.OPENAI:
            tts = OpenAITTS.from_settings(settings)
        case TTSProviderKind.LOCAL:
            from voice_agent.providers.local_tts import PiperTTS

            tts = PiperTTS.from_settings(settings)
    return Providers(stt=stt, llm=llm, tts=tts)
