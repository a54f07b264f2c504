"""One circuit breaker per tool, shared by every call in the process.

The state machine is purgatory's (asyncio-native, maintained): closed → open after N consecutive
failures → half-open once the cool-down has passed → closed on a successful trial, open again on a
failed one. Two things are added here, because a tool run is not a single `async with` block:

- admission and the outcome are separate steps (the runtime checks the breaker before asking the
  user to confirm, and records the outcome only after the run), and a run that ends without an
  answer from the tool's system (declined, duplicate, barge-in) records nothing;
- in half-open, exactly one trial run is admitted at a time; other requests see the breaker open
  until the trial settles (purgatory alone would let all of them through).

Timeouts and exceptions raised by the tool count as failures; invalid arguments, refusals,
declines and `ToolReportedError` do not. Purgatory times the cool-down with the wall clock.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import HALF_OPENED, OPENED, OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from voice_agent.logging import get_logger
from voice_agent.settings import Settings

BreakerState = Literal["closed", "open", "half_open"]

_log = get_logger("tooling.breakers")


class BreakerPass:
    """Permission for one run; settle it exactly once (later calls do nothing)."""

    def __init__(
        self, *, board: BreakerBoard, tool: str, breaker: AsyncCircuitBreaker, probe: bool
    ) -> None:
        self.tool = tool
        self.probe = probe  # the half-open trial run
        self._board = board
        self._breaker = breaker
        self._settled = False

    async def succeeded(self) -> None:
        """The tool's system answered: reset the failure count, or close a half-open breaker."""
        if self._settle():
            await self._breaker.__aexit__(None, None, None)

    async def failed(self, error: BaseException) -> None:
        """The tool timed out or raised: count a failure, or reopen a half-open breaker."""
        if self._settle():
            await self._breaker.__aexit__(type(error), error, error.__traceback__)

    def release(self) -> None:
        """The run ended without an answer from the tool's system: record nothing."""
        self._settle()

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        if self.probe:
            self._board._probing.discard(self.tool)
        return True


class BreakerBoard:
    """The circuit breakers of every tool in this process (create one, share it across calls)."""

    def __init__(self, *, failures: int, cooldown_s: float) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs at least one failure and a positive cool-down")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=failures, default_ttl=cooldown_s
        )
        self._factory.add_listener(_log_change)
        self._breakers: dict[str, AsyncCircuitBreaker] = {}
        self._probing: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerBoard:
        """A board with the threshold and cool-down from settings."""
        return cls(
            failures=settings.tool_breaker_failures, cooldown_s=settings.tool_breaker_cooldown_s
        )

    async def admit(self, tool: str) -> BreakerPass | None:
        """A pass for one run of `tool`, or None while its breaker is open."""
        breaker = self._breakers.get(tool)
        if breaker is None:
            breaker = await self._factory.get_breaker(tool)
            self._breakers[tool] = breaker
        try:
            await breaker.__aenter__()  # raises while open; turns half-open after the cool-down
        except OpenedState:
            return None
        await self._flush(breaker)
        probe = breaker.context.state == HALF_OPENED
        if probe:
            if tool in self._probing:
                return None  # one trial at a time
            self._probing.add(tool)
        return BreakerPass(board=self, tool=tool, breaker=breaker, probe=probe)

    def state(self, tool: str) -> BreakerState:
        """ "closed", "open", or "half_open" (the next run would be a trial)."""
        breaker = self._breakers.get(tool)
        if breaker is None:
            return "closed"
        context = breaker.context
        if context.state == OPENED:
            opened_at = context.opened_at or 0.0
            return "half_open" if time.time() > opened_at + context.ttl else "open"
        return "half_open" if context.state == HALF_OPENED else "closed"

    async def _flush(self, breaker: AsyncCircuitBreaker) -> None:
        # What AsyncCircuitBreaker.__aexit__ does with pending state-change messages.
        while breaker.context.messages:
            await breaker.messagebus.handle(breaker.context.messages.pop(0), breaker.uow)


def _log_change(name: str, kind: str, event: Any) -> None:
    if kind == "state_changed":
        state = {"opened": "open", "half-opened": "half_open"}.get(event.state, event.state)
        _log.warning("tool.breaker_state", tool=name, state=state)
