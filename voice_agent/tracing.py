"""Traces: one OpenTelemetry trace per call, across the token service, worker and post-call worker.

Off unless an OTLP endpoint is configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, read by `Settings`). Then each long-running process exports
its spans over OTLP/HTTP under its own service name (`voice-agent-token`, `-worker`, `-postcall`,
unless `OTEL_SERVICE_NAME` names one). Every span carries `call_id`, by default the one bound to
the log context (`bind_context`), so a span says which call it belongs to as every log line does.

The trace crosses processes as a W3C `traceparent`: the token service puts the mint's in the
dispatch metadata the signed token carries, the worker reads it from the job and writes its call
span's into the call record it hands over, and the post-call job continues from the record; the
LiveKit webhook reads it from the room's metadata. What arrives is checked by `valid_traceparent`
and ignored when malformed.

When tracing is off, `span` yields a shared non-recording span: a generator and a dict lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from typing import Any

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from voice_agent.logging import get_logger
from voice_agent.settings import OtelSampler, Settings, otel_pairs

__all__ = [
    "SERVICE_NAMES",
    "Span",
    "SpanKind",
    "begin",
    "configure_tracing",
    "enabled",
    "exporting",
    "install",
    "record",
    "shutdown_tracing",
    "span",
    "traceparent",
    "valid_traceparent",
]

log = get_logger("tracing")

SERVICE_NAMES = {
    "serve": "voice-agent-token",
    "worker": "voice-agent-worker",
    "postcall": "voice-agent-postcall",
}
"""The service name of each long-running command's spans when `OTEL_SERVICE_NAME` is unset."""

_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")
_PROPAGATOR = TraceContextTextMapPropagator()

_tracer: trace.Tracer | None = None
_provider: Any = None  # the SDK's TracerProvider while exporting


def valid_traceparent(value: object) -> str | None:
    """`value` when it is a W3C traceparent this code writes (version 00, non-zero ids)."""
    if isinstance(value, str) and len(value) == 55 and _TRACEPARENT.fullmatch(value):
        return value
    return None


def enabled() -> bool:
    """Whether this process exports spans."""
    return _tracer is not None


def configure_tracing(settings: Settings, *, process: str) -> bool:
    """Export this process's spans when an endpoint is configured; True when tracing is on."""
    endpoint = settings.otel_traces_endpoint
    if endpoint is None or settings.otel_sdk_disabled or settings.otel_traces_exporter == "none":
        return False
    # The SDK is imported only here: a process that does not trace never loads it.
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = settings.otel_service_name or SERVICE_NAMES.get(process, f"voice-agent-{process}")
    # Resource(...) rather than Resource.create(...): the latter reads OTEL_* itself.
    resource = Resource({**settings.otel_resource_attribute_map, "service.name": name})
    headers = settings.otel_exporter_otlp_headers
    exporter = OTLPSpanExporter(
        endpoint=endpoint,
        certificate_file=(
            str(settings.otel_exporter_otlp_certificate)
            if settings.otel_exporter_otlp_certificate
            else None
        ),
        headers=otel_pairs(headers.get_secret_value()) if headers is not None else {},
        timeout=settings.otel_exporter_otlp_timeout / 1000,
        compression=Compression(settings.otel_exporter_otlp_compression),
    )
    provider = TracerProvider(resource=resource, sampler=_sampler(settings))
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            max_queue_size=2048,
            schedule_delay_millis=settings.otel_bsp_schedule_delay,
            max_export_batch_size=512,
            export_timeout_millis=settings.otel_exporter_otlp_timeout,
        )
    )
    install(provider)
    log.info("tracing.configured", service=name, endpoint=endpoint)
    return True


def install(provider: Any) -> None:
    """Make `provider` (an SDK `TracerProvider`) this process's source of spans; tests pass one
    that exports to the SDK's in-memory exporter. `shutdown_tracing` undoes it."""
    global _tracer, _provider
    _provider, _tracer = provider, provider.get_tracer("voice_agent")


def shutdown_tracing() -> None:
    """Export what is still buffered and stop exporting (at process exit)."""
    global _tracer, _provider
    provider, _provider, _tracer = _provider, None, None
    if provider is not None:
        provider.shutdown()


@contextlib.contextmanager
def exporting(settings: Settings, *, process: str) -> Iterator[None]:
    """Tracing on (when configured) for the block: a command's whole run."""
    configure_tracing(settings, process=process)
    try:
        yield
    finally:
        shutdown_tracing()


@contextlib.contextmanager
def span(
    name: str,
    *,
    parent: str | None = None,
    call_id: str | None = None,
    kind: SpanKind = SpanKind.INTERNAL,
    start: float | None = None,
    **attributes: str | int | float | bool,
) -> Iterator[Span]:
    """A span around the block, current inside it, with `call_id`.

    `parent` (a traceparent) continues a trace from another process; otherwise the current span
    is the parent. `start` (monotonic seconds) backdates its start, for a stage that began before
    the code that knows about it ran. An exception marks it failed; a cancellation does not (a
    barge-in or a call ending is no fault) and is noted as `cancelled`.
    """
    tracer = _tracer
    if tracer is None:
        yield INVALID_SPAN
        return
    current = tracer.start_span(
        name,
        context=_context_of(parent) if parent else None,
        kind=kind,
        attributes=_with_call_id(call_id, attributes),
        start_time=_epoch_ns(start) if start is not None else None,
    )
    try:
        with trace.use_span(current, record_exception=False, set_status_on_exception=False):
            yield current
    except asyncio.CancelledError:
        current.set_attribute("cancelled", True)
        raise
    except Exception as e:  # any failure is the span's outcome; it propagates unchanged
        current.record_exception(e)
        current.set_status(Status(StatusCode.ERROR, f"{type(e).__name__}: {e}"[:300]))
        raise
    finally:
        current.end()


def begin(name: str, *, start: float | None = None, **attributes: str | int | float | bool) -> Span:
    """A span started now (or at monotonic `start`) under the current one, not made current;
    the caller ends it (`span.end()`)."""
    tracer = _tracer
    if tracer is None:
        return INVALID_SPAN
    return tracer.start_span(
        name,
        attributes=_with_call_id(None, attributes),
        start_time=_epoch_ns(start) if start is not None else None,
    )


def record(
    name: str,
    *,
    start: float | None,
    end: float | None,
    **attributes: str | int | float | bool,
) -> None:
    """A finished stage, from monotonic `start` to `end`, under the current span (when both are
    known): for stages timed by stamps rather than by a block, such as the end-of-turn wait."""
    tracer = _tracer
    if tracer is None or start is None or end is None:
        return
    stage = tracer.start_span(
        name, attributes=_with_call_id(None, attributes), start_time=_epoch_ns(start)
    )
    stage.end(end_time=_epoch_ns(max(start, end)))


def traceparent() -> str | None:
    """The current span as a W3C traceparent, for another process to continue; None when off."""
    if _tracer is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return valid_traceparent(carrier.get("traceparent"))


def _context_of(parent: str) -> otel_context.Context | None:
    """The remote parent of a valid traceparent; None (a new trace) otherwise."""
    if valid_traceparent(parent) is None:
        return None
    return _PROPAGATOR.extract({"traceparent": parent})


def _with_call_id(
    call_id: str | None, attributes: dict[str, str | int | float | bool]
) -> dict[str, str | int | float | bool]:
    """The attributes with `call_id`: as given, else the log context's, else the parent span's."""
    call_id = call_id or structlog.contextvars.get_contextvars().get("call_id")
    if call_id is None:
        inherited = getattr(trace.get_current_span(), "attributes", None) or {}
        call_id = inherited.get("call_id")
    return {"call_id": call_id, **attributes} if isinstance(call_id, str) else attributes


def _epoch_ns(monotonic_s: float) -> int:
    """A `time.monotonic()` moment as the wall-clock nanoseconds spans are stamped in."""
    return time.time_ns() - int((time.monotonic() - monotonic_s) * 1e9)


def _sampler(settings: Settings) -> Any:
    from opentelemetry.sdk.trace import sampling

    arg = settings.otel_traces_sampler_arg
    ratio = 1.0 if arg is None else arg
    return {
        OtelSampler.ALWAYS_ON: sampling.ALWAYS_ON,
        OtelSampler.ALWAYS_OFF: sampling.ALWAYS_OFF,
        OtelSampler.TRACEIDRATIO: sampling.TraceIdRatioBased(ratio),
        OtelSampler.PARENTBASED_ALWAYS_ON: sampling.ParentBased(sampling.ALWAYS_ON),
        OtelSampler.PARENTBASED_ALWAYS_OFF: sampling.ParentBased(sampling.ALWAYS_OFF),
        OtelSampler.PARENTBASED_TRACEIDRATIO: sampling.ParentBased(
            sampling.TraceIdRatioBased(ratio)
        ),
    }[settings.otel_traces_sampler]
