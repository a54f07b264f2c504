"""One circuit breaker per tool, shared by every call in the process, and across workers when
Redis is configured.

The state machine is purgatory's (asyncio-native, maintained): closed → open after N consecutive
failures → half-open once the cool-down has passed → closed on a successful trial, open again on a
failed one. Three things are added here, because a tool run is not a single `async with` block
and a deployment runs many workers:

- admission and the outcome are separate steps (the runtime checks the breaker before asking the
  user to confirm, and records the outcome only after the run), and a run that ends without an
  answer from the tool's system (declined, duplicate, barge-in) records nothing;
- in half-open, exactly one trial run is admitted at a time; other requests see the breaker open
  until the trial settles (purgatory alone would let all of them through);
- with `REDIS_URL` set, the breakers' decisions are shared (`shared_breakers.py`): a breaker that
  opens in one worker opens in all, one trial runs in the whole fleet, and its success closes the
  breaker everywhere. Failures are still counted per worker. Without Redis (or while it is down)
  each worker's breakers are its own. The scope is the `scope` label of the breaker metrics:
  `shared` or `process`.

Timeouts and exceptions raised by the tool count as failures; invalid arguments, refusals,
declines and `ToolReportedError` do not. Purgatory times the cool-down with the wall clock.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from prometheus_client import Counter, Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import CLOSED, HALF_OPENED, OPENED, ClosedState, OpenedState
from purgatory.service._async.circuitbreaker import AsyncCircuitBreaker

from voice_agent.logging import get_logger
from voice_agent.metrics import WORKER_REGISTRY
from voice_agent.settings import Settings
from voice_agent.tooling.shared_breakers import SharedBreakerState

BreakerState = Literal["closed", "open", "half_open"]
BreakerScope = Literal["process", "shared"]

_log = get_logger("tooling.breakers")

BREAKER_OPEN = Gauge(
    "voice_agent_tool_breaker_open",
    "1 while the tool's circuit breaker is open in this worker. scope=shared: the breakers of all "
    "workers on one Redis open and close together; scope=process: this worker's alone.",
    ["tool", "scope"],
    registry=WORKER_REGISTRY,
)
BREAKER_TRANSITIONS = Counter(
    "voice_agent_tool_breaker_transitions_total",
    "Breaker state changes in this worker; origin=local (decided here) or shared (announced by "
    "another worker).",
    ["tool", "state", "scope", "origin"],
    registry=WORKER_REGISTRY,
)
# The first tool call of a worker waits at most this long for the fleet's breaker state.
_LINK_TIMEOUT_S = 1.0


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
            if self.probe and self._breaker.context.state == CLOSED:
                self._board._announce_closed(self.tool)

    async def failed(self, error: BaseException) -> None:
        """The tool timed out or raised: count a failure, or reopen a half-open breaker."""
        if self._settle():
            context = self._breaker.context
            was_open_at = context.opened_at if context.state == OPENED else None
            await self._breaker.__aexit__(type(error), error, error.__traceback__)
            if context.state == OPENED and context.opened_at != was_open_at:
                self._board._announce_open(self.tool, context.opened_at or time.time())

    def release(self) -> None:
        """The run ended without an answer from the tool's system: record nothing."""
        self._settle()

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        if self.probe:
            self._board._end_trial(self.tool)
        return True


class BreakerBoard:
    """The circuit breakers of every tool in this process (create one, share it across calls)."""

    def __init__(
        self, *, failures: int, cooldown_s: float, shared: SharedBreakerState | None = None
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("a breaker needs at least one failure and a positive cool-down")
        self.failures = failures
        self.cooldown_s = cooldown_s
        self.scope: BreakerScope = "shared" if shared is not None else "process"
        self._shared = shared
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=failures, default_ttl=cooldown_s
        )
        self._factory.add_listener(self._on_change)
        self._breakers: dict[str, AsyncCircuitBreaker] = {}
        self._probing: set[str] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> BreakerBoard:
        """A board with the threshold and cool-down from settings, shared when Redis is set."""
        shared = None
        if settings.redis_url:
            shared = SharedBreakerState(
                url=settings.redis_url,
                namespace=settings.agent_name,
                cooldown_s=settings.tool_breaker_cooldown_s,
            )
        return cls(
            failures=settings.tool_breaker_failures,
            cooldown_s=settings.tool_breaker_cooldown_s,
            shared=shared,
        )

    async def admit(self, tool: str) -> BreakerPass | None:
        """A pass for one run of `tool`, or None while its breaker is open."""
        if self._shared is not None:
            await self._shared.link(
                on_open=self._opened_elsewhere,
                on_closed=self._closed_elsewhere,
                timeout_s=_LINK_TIMEOUT_S,
            )
        breaker = await self._breaker(tool)
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
            if self._shared is not None and not await self._shared.take_trial(tool):
                self._probing.discard(tool)
                return None  # another worker runs the trial
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

    async def aclose(self) -> None:
        """Stop following the other workers (nothing to do for a per-process board)."""
        if self._shared is not None:
            await self._shared.aclose()

    async def _breaker(self, tool: str) -> AsyncCircuitBreaker:
        breaker = self._breakers.get(tool)
        if breaker is None:
            breaker = await self._factory.get_breaker(tool)
            self._breakers[tool] = breaker
        return breaker

    async def _flush(self, breaker: AsyncCircuitBreaker) -> None:
        # What AsyncCircuitBreaker.__aexit__ does with pending state-change messages.
        while breaker.context.messages:
            await breaker.messagebus.handle(breaker.context.messages.pop(0), breaker.uow)

    # -- sharing -----------------------------------------------------------------------------

    def _announce_open(self, tool: str, opened_at: float) -> None:
        if self._shared is not None:
            self._shared.announce_open(tool, opened_at)

    def _announce_closed(self, tool: str) -> None:
        if self._shared is not None:
            self._shared.announce_closed(tool)

    def _end_trial(self, tool: str) -> None:
        self._probing.discard(tool)
        if self._shared is not None:
            self._shared.end_trial(tool)

    async def _opened_elsewhere(self, tool: str, opened_at: float) -> None:
        """Another worker's breaker for `tool` opened at `opened_at`: ours opens until then too."""
        context = (await self._breaker(tool)).context
        if context.state == OPENED and (context.opened_at or 0.0) >= opened_at:
            return
        if time.time() >= opened_at + context.ttl:
            return  # its cool-down is already over
        opened = OpenedState(tool)
        opened.opened_at = opened_at
        context.set_state(opened)
        context.messages.clear()  # the in-memory repository holds this very context
        self._record(tool, "open", origin="shared")

    async def _closed_elsewhere(self, tool: str) -> None:
        """Another worker's trial of `tool` succeeded: close ours."""
        breaker = self._breakers.get(tool)
        if breaker is None or breaker.context.state == CLOSED:
            return
        breaker.context.set_state(ClosedState())
        breaker.context.messages.clear()
        self._record(tool, "closed", origin="shared")

    # -- observability -----------------------------------------------------------------------

    def _on_change(self, name: str, kind: str, event: Any) -> None:
        if kind == "state_changed":
            state = {"opened": "open", "half-opened": "half_open"}.get(event.state, event.state)
            self._record(name, state, origin="local")

    def _record(self, tool: str, state: str, *, origin: str) -> None:
        _log.warning("tool.breaker_state", tool=tool, state=state, scope=self.scope, origin=origin)
        BREAKER_OPEN.labels(tool=tool, scope=self.scope).set(1 if state == "open" else 0)
        BREAKER_TRANSITIONS.labels(tool=tool, state=state, scope=self.scope, origin=origin).inc()
