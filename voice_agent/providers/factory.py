"""Build the STT, LLM and TTS a worker uses from the settings (`VOICE_AGENT_STT/LLM/TTS`)."""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.providers.base import LLM, STT, TTS
from voice_agent.providers.fallback import FallbackLLM, FallbackSTT, FallbackTTS
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


def _stt(kind: STTProviderKind, settings: Settings) -> STT:
    match kind:
        case STTProviderKind.OPENAI:
            return OpenAISTT.from_settings(settings)
        case STTProviderKind.LOCAL:
            from voice_agent.providers.local_stt import LocalWhisperSTT

            return LocalWhisperSTT.from_settings(settings)


def _llm(kind: LLMProviderKind, settings: Settings) -> LLM:
    match kind:
        case LLMProviderKind.OPENAI:
            return OpenAILLM.from_settings(settings)


def _tts(kind: TTSProviderKind, settings: Settings) -> TTS:
    match kind:
        case TTSProviderKind.OPENAI:
            return OpenAITTS.from_settings(settings)
        case TTSProviderKind.LOCAL:
            from voice_agent.providers.local_tts import PiperTTS

            return PiperTTS.from_settings(settings)


def build_providers(settings: Settings) -> Providers:
    """The configured providers, each with its fallback when one is set.

    A `ConfigError` names what is missing. The local providers are imported only when chosen:
    their packages are an optional extra.
    """
    switch = settings.fallback_after_s
    stt = _stt(settings.stt_provider, settings)
    if settings.stt_fallback is not None:
        stt = FallbackSTT(stt, _stt(settings.stt_fallback, settings), switch_after_s=switch)
    llm = _llm(settings.llm_provider, settings)
    if settings.llm_fallback is not None:
        llm = FallbackLLM(llm, _llm(settings.llm_fallback, settings), switch_after_s=switch)
    tts = _tts(settings.tts_provider, settings)
    if settings.tts_fallback is not None:
        tts = FallbackTTS(tts, _tts(settings.tts_fallback, settings), switch_after_s=switch)
    return Providers(stt=stt, llm=llm, tts=tts)
