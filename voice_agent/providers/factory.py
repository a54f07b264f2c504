"""Build the STT, LLM and TTS a worker uses from the settings (`VOICE_AGENT_STT/LLM/TTS`)."""

from __future__ import annotations

from dataclasses import dataclass

from voice_agent.exceptions import ConfigError
from voice_agent.providers.base import LLM, STT, TTS
from voice_agent.providers.fallback import FallbackLLM, FallbackSTT, FallbackTTS
from voice_agent.providers.openai_llm import OpenAILLM
from voice_agent.providers.openai_stt import OpenAISTT
from voice_agent.providers.openai_tts import OpenAITTS
from voice_agent.providers.retry import RetryingLLM, RetryingSTT, RetryingTTS
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


def _local_extra_missing(e: ImportError) -> ConfigError:
    return ConfigError(
        f"local speech needs the `local` extra ({e.name} is not installed): run `make setup` "
        "or `pip install 'voice-agent[local]'`, or choose openai with an OPENAI_API_KEY"
    )


def _stt(kind: STTProviderKind, settings: Settings) -> STT:
    if kind is STTProviderKind.AUTO:  # with a key, OpenAI; without one, this machine
        kind = STTProviderKind.OPENAI if settings.openai_api_key else STTProviderKind.LOCAL
    match kind:
        case STTProviderKind.OPENAI:
            return OpenAISTT.from_settings(settings)
        case STTProviderKind.LOCAL:
            try:
                from voice_agent.providers.local_stt import LocalWhisperSTT
            except ImportError as e:
                raise _local_extra_missing(e) from e
            return LocalWhisperSTT.from_settings(settings)
    raise ConfigError(f"no STT provider '{kind}'")  # unreachable: AUTO is resolved above


def _llm(kind: LLMProviderKind, settings: Settings) -> LLM:
    match kind:
        case LLMProviderKind.OPENAI:
            return OpenAILLM.from_settings(settings)


def _tts(kind: TTSProviderKind, settings: Settings) -> TTS:
    if kind is TTSProviderKind.AUTO:  # with a key, OpenAI; without one, this machine
        kind = TTSProviderKind.OPENAI if settings.openai_api_key else TTSProviderKind.LOCAL
    match kind:
        case TTSProviderKind.OPENAI:
            return OpenAITTS.from_settings(settings)
        case TTSProviderKind.LOCAL:
            try:
                from voice_agent.providers.local_tts import PiperTTS
            except ImportError as e:
                raise _local_extra_missing(e) from e
            return PiperTTS.from_settings(settings)
    raise ConfigError(f"no TTS provider '{kind}'")  # unreachable: AUTO is resolved above


def build_providers(settings: Settings) -> Providers:
    """The configured providers, each with its fallback when one is set, each retried by the one
    rule of `retry.py` (around the chain, so a retry may reach the fallback again).

    A `ConfigError` names what is missing. The local providers are imported only when chosen:
    their packages are an optional extra.
    """
    switch = settings.fallback_after_s
    silent = settings.provider_timeout_s
    stt = _stt(settings.stt, settings)
    if settings.stt_fallback is not None:
        stt = FallbackSTT(stt, _stt(settings.stt_fallback, settings), switch_after_s=switch)
    llm = _llm(settings.llm, settings)
    if settings.llm_fallback is not None:
        llm = FallbackLLM(llm, _llm(settings.llm_fallback, settings), switch_after_s=switch)
    tts = _tts(settings.tts, settings)
    if settings.tts_fallback is not None:
        tts = FallbackTTS(tts, _tts(settings.tts_fallback, settings), switch_after_s=switch)
    return Providers(
        stt=RetryingSTT(stt, silence_timeout_s=silent),
        llm=RetryingLLM(llm, silence_timeout_s=silent),
        tts=RetryingTTS(tts, silence_timeout_s=silent),
    )


def build_llm(settings: Settings) -> LLM:
    """The configured LLM alone (with its fallback and retry), for a session without audio."""
    llm = _llm(settings.llm, settings)
    if settings.llm_fallback is not None:
        fallback = _llm(settings.llm_fallback, settings)
        llm = FallbackLLM(llm, fallback, switch_after_s=settings.fallback_after_s)
    return RetryingLLM(llm, silence_timeout_s=settings.provider_timeout_s)
