"""Test doubles for tool authors and the runtime's own tests.

`ScriptedConfirmer` answers confirmation requests from a script (or never, to test the time
limit). `ToolBench` wires a real `ToolRuntime` (real ledger file, real breakers) around some
specs with small limits, and collects the audit records. `tool_context` makes a `ToolContext`
for calling `ToolSpec.invoke` directly.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from voice_agent.chat import ToolCall
from voice_agent.closing import AsyncClosing
from voice_agent.logging import get_logger
from voice_agent.tooling.audit import ToolAuditEntry
from voice_agent.tooling.breakers import BreakerBoard
from voice_agent.tooling.confirm import ConfirmationAnswer, ConfirmationRequest
from voice_agent.tooling.context import ToolContext
from voice_agent.tooling.ledger import IdempotencyLedger
from voice_agent.tooling.policy import ToolPolicy
from voice_agent.tooling.registry import ToolRegistry
from voice_agent.tooling.runtime import ToolResult, ToolRuntime
from voice_agent.tooling.spec import ToolSpec


class ScriptedConfirmer:
    """Answers each request with the next scripted answer; None means never answer."""

    def __init__(self, answers: Iterable[ConfirmationAnswer | None] = ()) -> None:
        self._answers = list(answers)
        self.requests: list[ConfirmationRequest] = []
        self.asked = asyncio.Event()  # set once a request has arrived

    def script(self, *answers: ConfirmationAnswer | None) -> None:
        """Queue more answers."""
        self._answers.extend(answers)

    async def __call__(self, request: ConfirmationRequest) -> ConfirmationAnswer:
        self.requests.append(request)
        self.asked.set()
        if not self._answers:
            raise AssertionError(f"unexpected confirmation request: {request.prompt}")
        answer = self._answers.pop(0)
        if answer is None:
            await asyncio.Event().wait()  # the user never answers
        assert answer is not None
        return answer


def tool_context(
    data_dir: Path,
    *,
    call_id: str = "call-test",
    user_id: str | None = "user-test",
    idempotency_key: str = "key-test",
    app_context: Mapping[str, Any] | None = None,
) -> ToolContext:
    """A context for calling `ToolSpec.invoke` in a test."""
    return ToolContext(
        call_id=call_id,
        user_id=user_id,
        app_context=MappingProxyType(dict(app_context or {})),
        log=get_logger("tools").bind(call_id=call_id),
        idempotency_key=idempotency_key,
        data_dir=data_dir,
    )


@dataclass(kw_only=True)
class ToolBench(AsyncClosing):
    """A real `ToolRuntime` around some specs, with its audit records collected."""

    runtime: ToolRuntime
    confirmer: ScriptedConfirmer
    ledger: IdempotencyLedger
    breakers: BreakerBoard
    audit: list[ToolAuditEntry] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def create(
        cls,
        *specs: ToolSpec,
        data_dir: Path,
        answers: Iterable[ConfirmationAnswer | None] = (),
        allowed: Iterable[str] | None = None,
        call_id: str = "call-test",
        app_context: Mapping[str, Any] | None = None,
        max_calls_per_turn: int = 4,
        max_calls_per_call: int = 20,
        default_timeout_s: float = 2.0,
        confirm_timeout_s: float = 2.0,
        ledger: IdempotencyLedger | None = None,
        breakers: BreakerBoard | None = None,
    ) -> ToolBench:
        """A bench whose policy allows every given spec unless `allowed` says otherwise."""
        audit: list[ToolAuditEntry] = []
        confirmer = ScriptedConfirmer(answers)
        ledger = ledger or IdempotencyLedger.in_data_dir(data_dir)
        breakers = breakers or BreakerBoard(failures=3, cooldown_s=30.0)
        policy = ToolPolicy(
            allowed=frozenset(allowed if allowed is not None else (s.name for s in specs)),
            max_calls_per_turn=max_calls_per_turn,
            max_calls_per_call=max_calls_per_call,
            default_timeout_s=default_timeout_s,
            confirm_timeout_s=confirm_timeout_s,
        )
        runtime = ToolRuntime(
            registry=ToolRegistry.from_specs(specs),
            policy=policy,
            breakers=breakers,
            ledger=ledger,
            confirmer=confirmer,
            audit=audit.append,
            call_id=call_id,
            user_id="user-test",
            app_context=lambda: dict(app_context or {}),
            data_dir=data_dir,
            log=get_logger("tools"),
        )
        runtime.begin_turn(1)
        return cls(
            runtime=runtime, confirmer=confirmer, ledger=ledger, breakers=breakers, audit=audit
        )

    def call(self, name: str, **arguments: Any) -> ToolCall:
        """A tool call as the model would send it."""
        return ToolCall(id=f"call_{next(self._ids)}", name=name, arguments=json.dumps(arguments))

    async def run(self, name: str, **arguments: Any) -> ToolResult:
        """Run one call through the runtime."""
        return await self.runtime.run(self.call(name, **arguments))

    async def aclose(self) -> None:
        """Close the ledger."""
        await self.ledger.aclose()
