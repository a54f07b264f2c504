"""What tracing costs a turn: the span calls one agent turn makes, with tracing off and on.

A turn with one tool makes eight span calls (the turn, its end-of-turn stage, STT, two LLM rounds,
the tool, two TTS chunks). This times those calls, with a call bound to the log context as in the
worker, in three states: off (the default: no endpoint set), on with every trace sampled, and on
with none sampled (`OTEL_TRACES_SAMPLER=always_off`). On, spans go through the same
BatchSpanProcessor the worker uses to an exporter that drops them, so the figure is the cost on
the event loop, not the collector's network.

Prints the figures and writes docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Sampler

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_section  # noqa: E402
from voice_agent import tracing  # noqa: E402
from voice_agent.logging import bound_contextvars  # noqa: E402


class _Dropped(SpanExporter):
    """Accepts every batch and keeps nothing."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _turn() -> None:
    """The span calls of one agent turn with a tool, as the worker makes them."""
    now = time.monotonic()
    with tracing.span("turn", start=now - 0.6, turn=1):
        tracing.record("end_of_turn", start=now - 0.6, end=now - 0.1)
        with tracing.span("stt", audio_s=2.0):
            pass
        with tracing.span("llm", round=0, tools_offered=True):
            pass
        with tracing.span("tool search_runbooks", tool="search_runbooks") as span:
            span.set_attribute("outcome", "ok")
        with tracing.span("llm", round=1, tools_offered=True):
            pass
        for chunk in range(2):
            with tracing.span("tts", chunk=chunk, chars=40):
                pass


def _per_turn_us(turns: int, repeats: int) -> float:
    """The median over `repeats` runs of the mean time of one turn's span calls, in µs."""
    runs = []
    with bound_contextvars(call_id="bench-call"):
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(turns):
                _turn()
            runs.append((time.perf_counter() - started) / turns * 1e6)
    return statistics.median(runs)


def _measure(sampler: Sampler | None, turns: int, repeats: int) -> float:
    if sampler is None:
        return _per_turn_us(turns, repeats)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(_Dropped(), max_queue_size=2048))
    tracing.install(provider)
    try:
        return _per_turn_us(turns, repeats)
    finally:
        tracing.shutdown_tracing()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5000, help="turns per run")
    parser.add_argument("--repeats", type=int, default=7, help="runs; the median is reported")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    states = [("off (default)", None), ("on, sampled", ALWAYS_ON), ("on, not sampled", ALWAYS_OFF)]
    _measure(ALWAYS_ON, 200, 1)  # warm the SDK's imports and caches
    rows = []
    for label, sampler in states:
        per_turn = _measure(sampler, args.turns, args.repeats)
        rows.append(f"| {label} | {per_turn:.1f} µs | {per_turn / 8:.2f} µs |")
        print(f"tracing {label}: {per_turn:.1f} µs per turn ({per_turn / 8:.2f} µs per span)")
    body = "\n".join(["| tracing | per turn (8 spans) | per span |", "|---|---|---|", *rows])
    body += (
        "\n\nA turn's voice-to-voice time is hundreds of milliseconds (see above): traced, its"
        " spans cost under a thousandth of it; off, a microsecond each."
    )
    if not args.no_write:
        method = (__doc__ or "").split("\n\n")[1].strip()
        write_section("Tracing overhead per turn", method, body)


if __name__ == "__main__":
    main()
