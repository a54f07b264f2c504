"""How the agent behaves on a call, from the settings and the agent profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voice_agent.agent.lines import LineName, SpokenLines
from voice_agent.pipeline.smart_turn_weights import model_path
from voice_agent.profile import AgentProfile
from voice_agent.settings import Settings, STTProviderKind


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """How the agent behaves on a call."""

    instructions: str
    greeting: str
    fallback_line: str = "Sorry, I'm having trouble right now. Could you say that again?"
    goodbye_line: str = "Thanks for calling. Goodbye!"
    failure_goodbye_line: str = (
        "I'm sorry, I'm having technical difficulties. Please try again later. Goodbye."
    )
    eou_silence_ms: int = 500
    speech_pause_ms: int = 500
    """The VAD's pause that ends an utterance (speculation starts there); at most eou_silence_ms.
    The default (equal to eou_silence_ms) keeps the silence-only timing of old."""
    turn_detector: str = "silence"
    eou_incomplete_ms: int = 1500
    eou_complete_ms: int = 0
    """The least silence before a complete utterance commits (transcript detector)."""
    stt_punctuates: bool | None = False
    """Whether the STT marks finished sentences (the transcript rules read a missing mark);
    None: learn it from the call's transcripts."""
    smart_turn_threshold: float = 0.5
    eou_unsure_ms: int = 700
    eou_level_pitch_ms: int = 0
    """Silence before complete words whose pitch did not fall end the turn (transcript
    detector; 0: the pitch is not measured)."""
    eou_min_confidence: float = 0.0
    """Complete words the STT scored below this are read as unfinished (transcript and hybrid
    detectors; 0: off)."""
    smart_turn_model: Path | None = None
    """The Smart Turn model file ("smart_turn" and "hybrid" detectors)."""
    speculation_max_per_turn: int = 0
    speculation_max_wasted: int = 0
    min_interruption_ms: int = 400
    backchannel_max_ms: int = 0
    max_call_s: float = 1800.0
    user_silence_timeout_s: float = 60.0
    max_consecutive_failures: int = 3
    context_token_budget: int = 4000
    provider_timeout_s: float = 10.0
    stt_language: str | None = None
    user_join_timeout_s: float = 30.0


def session_options(settings: Settings, profile: AgentProfile | None = None) -> SessionOptions:
    """The call behaviour the settings (and the agent profile, where it says) describe."""
    profile = profile or AgentProfile.built_in(settings)
    return SessionOptions(
        instructions=profile.instructions,
        greeting=profile.greeting,
        eou_silence_ms=settings.eou_silence_ms,
        speech_pause_ms=min(settings.speech_pause_ms, settings.eou_silence_ms),
        turn_detector=settings.turn_detector,
        eou_incomplete_ms=settings.eou_incomplete_ms,
        eou_complete_ms=settings.eou_complete_ms,
        stt_punctuates=_stt_punctuates(settings),
        smart_turn_threshold=settings.smart_turn_threshold,
        eou_unsure_ms=settings.eou_unsure_ms,
        eou_level_pitch_ms=settings.eou_level_pitch_ms,
        eou_min_confidence=settings.eou_min_confidence,
        smart_turn_model=model_path(settings),
        speculation_max_per_turn=settings.speculation_max_per_turn,
        speculation_max_wasted=settings.speculation_max_wasted,
        min_interruption_ms=settings.min_interruption_ms,
        backchannel_max_ms=settings.backchannel_max_ms,
        max_call_s=profile.limits.max_call_s or settings.max_call_s,
        user_silence_timeout_s=settings.user_silence_timeout_s,
        max_consecutive_failures=settings.max_consecutive_failures,
        context_token_budget=settings.context_token_budget,
        provider_timeout_s=settings.provider_timeout_s,
        stt_language=settings.stt_language,
    )


def spoken_lines(options: SessionOptions) -> SpokenLines:
    """The fixed lines of calls with these options (share one among a worker's calls)."""
    return SpokenLines(
        texts={
            LineName.FALLBACK: options.fallback_line,
            LineName.GOODBYE: options.goodbye_line,
            LineName.FAILURE_GOODBYE: options.failure_goodbye_line,
        }
    )


def _stt_punctuates(settings: Settings) -> bool | None:
    """`VOICE_AGENT_STT_PUNCTUATES` resolved: "auto" is true for Whisper on this machine (it
    always punctuates) and learned from the call's transcripts for any other STT (None)."""
    if settings.stt_punctuates != "auto":
        return settings.stt_punctuates
    local = settings.stt is STTProviderKind.LOCAL or (
        settings.stt is STTProviderKind.AUTO and not settings.openai_api_key
    )
    return True if local else None
