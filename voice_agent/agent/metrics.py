"""Per-turn latency: measured once, logged, exported to Prometheus, kept in the call record.

All stamps are `time.monotonic()` seconds. Voice-to-voice runs from the end of the user's speech
(the last voiced audio, not the moment the silence timer fired) to the first agent audio frame
handed to the room; the stages inside it are end-of-utterance delay, STT, LLM time to first token
and TTS time to first byte, and what is left over is our own pipeline overhead.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from voice_agent.call_record import TurnMetricsRecord
from voice_agent.metrics import WORKER_REGISTRY

_B = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

_R = WORKER_REGISTRY


def _seconds(name: str, documentation: str) -> Histogram:
    return Histogram(name, documentation, buckets=_B, registry=_R)


EOU_DELAY = _seconds("voice_agent_eou_delay_seconds", "End-of-utterance delay.")
STT_TIME = _seconds("voice_agent_stt_seconds", "Speech-to-text time per turn.")
LLM_TTFT = _seconds("voice_agent_llm_ttft_seconds", "LLM time to first token.")
TTS_TTFB = _seconds("voice_agent_tts_ttfb_seconds", "TTS time to first byte.")
TOOL_TIME = _seconds("voice_agent_tool_seconds", "Time spent running tools in a turn.")
VOICE_TO_VOICE = _seconds(
    "voice_agent_voice_to_voice_seconds", "End of user speech to first agent audio frame sent."
)
INTERRUPTIONS = Counter(
    "voice_agent_interruptions_total", "Agent turns cut short by the user.", registry=_R
)
CALLS_REFUSED = Counter(
    "voice_agent_calls_refused_total",
    "Jobs refused because their call id already had a session, by what the worker did.",
    ["action"],
    registry=_R,
)
FALSE_INTERRUPTIONS = Counter(
    "voice_agent_false_interruptions_total",
    "Pauses for user sound that held no words (resumed).",
    registry=_R,
)
SPECULATIONS = Counter(
    "voice_agent_speculations_total",
    "Replies prepared at the caller's pause, by outcome (used, wasted, unused).",
    ["outcome"],
    registry=_R,
)
PROVIDER_FAILURES = Counter(
    "voice_agent_provider_failures_total",
    "Provider calls that failed after retry.",
    ["stage"],
    registry=_R,
)
TOOL_CALLS = Counter(
    "voice_agent_tool_calls_total",
    "Tool requests by tool and outcome (ok, refused, invalid, timeout, error, breaker_open, ...).",
    ["tool", "outcome"],
    registry=_R,
)
CLIENT_EVENTS_DROPPED = Counter(
    "voice_agent_client_events_dropped_total",
    "App messages dropped as malformed or unexpected.",
    registry=_R,
)
ACTIVE_CALLS = Gauge("voice_agent_active_calls", "Calls this worker is running.", registry=_R)
WORKER_LOAD = Gauge(
    "voice_agent_worker_load",
    "The load this worker last reported to LiveKit (0-1: calls over max jobs, or CPU if higher).",
    registry=_R,
)
CALLS = Counter("voice_agent_calls_total", "Finished calls by end reason.", ["reason"], registry=_R)


def _ms(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start) * 1000, 1)


@dataclass
class TurnTimer:
    """The moments of one agent turn, stamped as they happen."""

    turn: int
    speech_ended: float | None = None
    turn_committed: float | None = None
    stt_started: float | None = None
    stt_done: float | None = None
    llm_started: float | None = None
    llm_first_token: float | None = None
    tts_started: float | None = None
    tts_first_byte: float | None = None
    first_audio: float | None = None
    tool_seconds: float | None = None  # total time in tools this turn (confirmations included)
    interrupted: bool = False

    def record(self) -> TurnMetricsRecord:
        """The turn's figures in milliseconds."""
        return TurnMetricsRecord(
            turn=self.turn,
            eou_delay_ms=_ms(self.speech_ended, self.turn_committed),
            stt_ms=_ms(self.stt_started, self.stt_done),
            llm_ttft_ms=_ms(self.llm_started, self.llm_first_token),
            tts_ttfb_ms=_ms(self.tts_started, self.tts_first_byte),
            voice_to_voice_ms=_ms(self.speech_ended, self.first_audio),
            tool_ms=None if self.tool_seconds is None else round(self.tool_seconds * 1000, 1),
            interrupted=self.interrupted,
        )

    def export(self) -> TurnMetricsRecord:
        """Observe the figures in the Prometheus histograms; the record."""
        rec = self.record()
        for hist, value in (
            (EOU_DELAY, rec.eou_delay_ms),
            (STT_TIME, rec.stt_ms),
            (LLM_TTFT, rec.llm_ttft_ms),
            (TTS_TTFB, rec.tts_ttfb_ms),
            (VOICE_TO_VOICE, rec.voice_to_voice_ms),
            (TOOL_TIME, rec.tool_ms),
        ):
            if value is not None:
                hist.observe(value / 1000)
        if rec.interrupted:
            INTERRUPTIONS.inc()
        return rec
