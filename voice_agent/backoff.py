"""How long to wait before reconnecting to a dependency (LiveKit, Redis), and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter, bounded by `max_attempts` (None: retry forever).

    Jitter matters at scale: when a LiveKit node restarts, every worker that was connected to it
    loses its socket at the same instant, and identical delays would bring them all back at once.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 15.0
    multiplier: float = 2.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        if self.initial_delay_s <= 0 or self.max_delay_s < self.initial_delay_s:
            raise ValueError("need 0 < initial_delay_s <= max_delay_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None for no limit)")

    def exhausted(self, attempt: int) -> bool:
        """True when `attempt` (1-based count of consecutive failures) is past the limit."""
        return self.max_attempts is not None and attempt > self.max_attempts

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before reconnect attempt number `attempt` (1-based)."""
        ceiling = min(
            self.max_delay_s, self.initial_delay_s * self.multiplier ** max(attempt - 1, 0)
        )
        return (rng or random).uniform(self.initial_delay_s, ceiling)
