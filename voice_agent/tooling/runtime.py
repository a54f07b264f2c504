"""The guarded path from a model's tool call to a result (one `ToolRuntime` per call).

`run` applies, in order: the per-turn and per-call limits; the allowlist; argument validation;
the tool's circuit breaker; the idempotency ledger; the user's confirmation for destructive
tools; and the run itself under its time limit. Every request ends in exactly one audit record
and one `tool.<outcome>` log event carrying `call_id`; a background tool also gets a "started"
record (same idempotency key) once its guards have passed, when the caller asks to hear of it.
Nothing a tool raises escapes `run`, except cancellation (a barge-in with
`on_interrupt="cancel"`, or the call ending), which is audited as "cancelled", releases the
ledger claim, and propagates.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from voice_agent.chat import ToolCall
from voice_agent.exceptions import ToolArgumentsError, ToolReportedError
from voice_agent.logging import Logger
from voice_agent.tooling import messages
from voice_agent.tooling.audit import ToolAuditEntry, ToolOutcome
from voice_agent.tooling.breakers import BreakerBoard, BreakerPass
from voice_agent.tooling.confirm import (
    CONFIRMATION_ANSWERS,
    ConfirmationAnswer,
    ConfirmationRequest,
    ConfirmationState,
    Confirmer,
)
from voice_agent.tooling.context import ToolContext
from voice_agent.tooling.ledger import IdempotencyLedger, LedgerBusy, LedgerClaim, LedgerDone
from voice_agent.tooling.policy import ToolPolicy
from voice_agent.tooling.redact import bounded, redact, truncate_json, truncate_text
from voice_agent.tooling.registry import ToolRegistry
from voice_agent.tooling.spec import ToolSpec

_WARN = {"timeout", "error", "breaker_open", "limit", "refused", "invalid"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolResult:
    """What became of one tool call: `content` is the tool message for the model (JSON text)."""

    tool_call_id: str
    tool: str
    outcome: ToolOutcome
    content: str
    result: Any
    audit: ToolAuditEntry


@dataclass(slots=True)
class _Attempt:
    """One request as it moves through the guards (what must be undone if it is cancelled)."""

    call: ToolCall
    turn: int | None = None
    at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    arguments: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    token: str | None = None  # ledger claim token while the claim is held
    breaker: BreakerPass | None = None
    confirmation: ConfirmationState = "not_needed"
    result: Any = None


class ToolRuntime:
    """Runs one call's tool requests through the guards."""

    def __init__(
        self,
        *,
        registry: ToolRegistry,
        policy: ToolPolicy,
        breakers: BreakerBoard,
        ledger: IdempotencyLedger,
        confirmer: Confirmer,
        audit: Callable[[ToolAuditEntry], None],
        call_id: str,
        user_id: str | None,
        app_context: Callable[[], Mapping[str, Any]],
        data_dir: Path,
        log: Logger,
    ) -> None:
        self._registry = registry
        self._policy = policy
        self._breakers = breakers
        self._ledger = ledger
        self._confirmer = confirmer
        self._audit = audit
        self._call_id = call_id
        self._user_id = user_id
        self._app_context = app_context
        self._data_dir = data_dir
        self._log = log
        self._turn: int | None = None
        self._turn_calls = 0
        self._call_calls = 0

    def tool_schemas(self) -> list[dict[str, Any]]:
        """The tools the model may see: allowed for this agent and registered."""
        return [s.openai_schema() for s in self._registry.specs() if s.name in self._policy.allowed]

    def spec_for(self, function_name: str) -> ToolSpec | None:
        """The spec of the allowed, registered tool the model calls `function_name` (None
        otherwise)."""
        spec = self._registry.for_function(function_name)
        return spec if spec is not None and spec.name in self._policy.allowed else None

    def allows(self, tool: str) -> bool:
        """Whether `tool` (a tool's name, as in the audit) is registered and allowed."""
        return tool in self._policy.allowed and tool in self._registry

    def begin_turn(self, turn: int) -> None:
        """A new agent turn: the per-turn limit starts again."""
        self._turn = turn
        self._turn_calls = 0

    def skip(self, call: ToolCall, reason: str) -> ToolResult:
        """Record a call that must not run (its generation was interrupted); runs nothing."""
        attempt = _Attempt(call=call, turn=self._turn, arguments=_loose_arguments(call.arguments))
        return self._finish(attempt, "skipped", messages.skipped(call.name, reason), error=reason)

    async def run(
        self, call: ToolCall, *, started: Callable[[ToolResult], None] | None = None
    ) -> ToolResult:
        """Run one tool call through every guard; never raises except `CancelledError`.

        For a background tool, `started` hears (with a "started" result, audited) the moment
        its guards have passed and it begins to run; the returned result comes when it ends.
        """
        attempt = _Attempt(call=call, turn=self._turn)
        try:
            return await self._run(attempt, started)
        except asyncio.CancelledError:
            await self._undo(attempt)
            content = messages.cancelled(call.name)
            self._finish(attempt, "cancelled", content, result=attempt.result, error="cancelled")
            raise
        except Exception as e:  # noqa: BLE001 - a fault in the guards themselves (the ledger's disk)
            await self._undo(attempt)
            self._log.exception("tool.runtime_failed", call_id=self._call_id, tool=call.name)
            return self._finish(
                attempt,
                "error",
                messages.error(call.name, None),
                error=f"runtime: {type(e).__name__}: {e}",
            )

    async def _run(
        self, attempt: _Attempt, started: Callable[[ToolResult], None] | None
    ) -> ToolResult:
        call = attempt.call
        if self._turn_calls >= self._policy.max_calls_per_turn:
            attempt.arguments = _loose_arguments(call.arguments)
            content = messages.limit("turn", self._policy.max_calls_per_turn)
            return self._finish(attempt, "limit", content, error="per-turn limit")
        if self._call_calls >= self._policy.max_calls_per_call:
            attempt.arguments = _loose_arguments(call.arguments)
            content = messages.limit("call", self._policy.max_calls_per_call)
            return self._finish(attempt, "limit", content, error="per-call limit")
        self._turn_calls += 1
        self._call_calls += 1

        spec = self._registry.for_function(call.name)
        if spec is None or spec.name not in self._policy.allowed:
            attempt.arguments = _loose_arguments(call.arguments)
            reason = "unknown tool" if spec is None else "not allowed for this agent"
            return self._finish(attempt, "refused", messages.refused(call.name), error=reason)

        try:
            args = spec.validate(call.arguments)
        except ToolArgumentsError as e:
            attempt.arguments = _loose_arguments(call.arguments, spec.secret_args)
            return self._finish(attempt, "invalid", messages.invalid(str(e)), error=str(e))
        attempt.arguments = spec.redacted(args)
        attempt.key = spec.idempotency_key(self._call_id, args)

        attempt.breaker = await self._breakers.admit(spec.name)
        if attempt.breaker is None:
            # A request already done is answered from the ledger, even while the breaker is open
            # (with the breaker closed, the claim below finds it).
            earlier = await self._ledger.lookup(attempt.key)
            if isinstance(earlier, LedgerDone):
                content = messages.duplicate_done(earlier.result)
                return self._finish(attempt, "duplicate", content, result=earlier.result)
            content = messages.breaker_open(spec.name, spec.fallback)
            return self._finish(attempt, "breaker_open", content, error="circuit breaker open")

        attempt.token = self._ledger.new_token()
        held = await self._ledger.claim(
            attempt.key, tool=spec.name, call_id=self._call_id, token=attempt.token
        )
        if isinstance(held, LedgerDone | LedgerBusy):
            attempt.token = None
            attempt.breaker.release()
            if isinstance(held, LedgerDone):
                return self._finish(
                    attempt, "duplicate", messages.duplicate_done(held.result), result=held.result
                )
            return self._finish(
                attempt, "duplicate", messages.duplicate_busy(spec.name), error="in progress"
            )

        if spec.needs_confirmation:
            attempt.confirmation = await self._confirm(spec, args, attempt)
            if attempt.confirmation != "confirmed":
                await self._undo(attempt)
                content = messages.declined(spec.name, timed_out=attempt.confirmation == "timeout")
                return self._finish(attempt, "declined", content)

        if spec.background and started is not None:
            started(self._finish(attempt, "started", messages.started(spec.name)))
        return await self._execute(spec, args, attempt)

    async def _execute(self, spec: ToolSpec, args: BaseModel, attempt: _Attempt) -> ToolResult:
        assert attempt.key is not None
        assert attempt.breaker is not None
        timeout_s = spec.timeout_s or self._policy.default_timeout_s
        ctx = ToolContext(
            call_id=self._call_id,
            user_id=self._user_id,
            app_context=MappingProxyType(dict(self._app_context())),
            log=self._log.bind(call_id=self._call_id, tool=spec.name),
            idempotency_key=attempt.key,
            data_dir=self._data_dir,
        )
        try:
            raw = await spec.run_validated(args, ctx, timeout_s=timeout_s)
        except TimeoutError as e:
            await attempt.breaker.failed(e)
            await self._undo(attempt)
            content = messages.timeout(spec.name, timeout_s, spec.fallback)
            return self._finish(attempt, "timeout", content, error=f"no result in {timeout_s:g} s")
        except ToolReportedError as e:
            await self._undo(attempt)  # the system answered: not a breaker failure
            content = messages.error(spec.name, spec.fallback, reported=str(e))
            return self._finish(attempt, "error", content, error=str(e))
        except Exception as e:  # noqa: BLE001 - any fault of the tool's code is its failure
            await attempt.breaker.failed(e)
            await self._undo(attempt)
            self._log.warning("tool.raised", call_id=self._call_id, tool=spec.name, exc_info=True)
            content = messages.error(spec.name, spec.fallback)
            return self._finish(attempt, "error", content, error=f"{type(e).__name__}: {e}")
        result = to_jsonable_python(raw, fallback=str)
        attempt.result = result  # from here on, even a cancelled request did its work
        await attempt.breaker.succeeded()
        claim = _claim(attempt)
        attempt.token = None
        await asyncio.shield(self._ledger.complete(claim, result))
        return self._finish(attempt, "ok", messages.ok(result), result=result)

    async def _confirm(
        self, spec: ToolSpec, args: BaseModel, attempt: _Attempt
    ) -> ConfirmationAnswer:
        request = ConfirmationRequest(
            tool=spec.name,
            prompt=spec.confirm_prompt(args),
            arguments=dict(attempt.arguments),
            tool_call_id=attempt.call.id,
        )
        self._log.info(
            "tool.confirm_requested",
            call_id=self._call_id,
            tool=spec.name,
            tool_call_id=attempt.call.id,
        )
        try:
            async with asyncio.timeout(self._policy.confirm_timeout_s):
                answer = await self._confirmer(request)
        except TimeoutError:
            return "timeout"
        except Exception:  # noqa: BLE001 - a confirmer that fails counts as no (logged)
            self._log.exception("tool.confirm_failed", call_id=self._call_id, tool=spec.name)
            return "declined"
        return answer if answer in CONFIRMATION_ANSWERS else "declined"

    async def _undo(self, attempt: _Attempt) -> None:
        """Release what the attempt holds (breaker pass, ledger claim); safe to repeat."""
        if attempt.breaker is not None:
            attempt.breaker.release()
        if attempt.key is not None and attempt.token is not None:
            token, attempt.token = attempt.token, None
            release = asyncio.ensure_future(self._ledger.release(attempt.key, token))
            try:
                await asyncio.shield(release)
            except asyncio.CancelledError:
                pass  # cancelled again while releasing: the release still completes
            except Exception:  # noqa: BLE001 - a failed release is logged; the call goes on
                self._log.exception("tool.ledger_release_failed", call_id=self._call_id)

    def _finish(
        self,
        attempt: _Attempt,
        outcome: ToolOutcome,
        content: str,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> ToolResult:
        call = attempt.call
        duration_ms = round((time.monotonic() - attempt.started) * 1000, 1)
        spec = self._registry.for_function(call.name)
        secret = spec.secret_args if spec is not None else frozenset()
        tool = spec.name if spec is not None else call.name
        entry = ToolAuditEntry(
            at=attempt.at,
            tool=tool,
            tool_call_id=call.id,
            turn=attempt.turn,
            arguments=bounded(attempt.arguments),
            outcome=outcome,
            confirmation=attempt.confirmation,
            result=truncate_json(redact(result, secret_keys=secret)),
            error=truncate_text(error) if error is not None else None,
            duration_ms=duration_ms,
            idempotency_key=attempt.key,
        )
        try:
            self._audit(entry)
        except Exception:  # noqa: BLE001 - the audit sink failing must not end the call
            self._log.exception("tool.audit_failed", call_id=self._call_id, tool=call.name)
        level = self._log.warning if outcome in _WARN else self._log.info
        level(
            f"tool.{outcome}",
            call_id=self._call_id,
            tool=tool,
            tool_call_id=call.id,
            turn=attempt.turn,
            duration_ms=duration_ms,
            confirmation=attempt.confirmation,
            error=entry.error,
        )
        return ToolResult(
            tool_call_id=call.id,
            tool=tool,
            outcome=outcome,
            content=content,
            result=result,
            audit=entry,
        )


def _claim(attempt: _Attempt) -> LedgerClaim:
    assert attempt.key is not None
    assert attempt.token is not None
    return LedgerClaim(attempt.key, attempt.token)


def _loose_arguments(raw: str, secret_args: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Unvalidated arguments for the audit record: parsed if possible, secrets redacted."""
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError:
        return {"_unparsed": truncate_text(raw, limit=200)}
    if not isinstance(value, dict):
        return {"_unparsed": truncate_text(raw, limit=200)}
    redacted = redact(value, secret_keys=secret_args)
    assert isinstance(redacted, dict)
    return redacted
