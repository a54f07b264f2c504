"""What a running tool is given about the call it serves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voice_agent.logging import Logger


@dataclass(frozen=True, slots=True)
class ToolContext:
    """The call a tool runs for.

    `app_context` is the structured context the app sent over the data channel (read-only);
    `log` is a structlog logger already bound with `call_id` and `tool`; `idempotency_key` is
    the same for every repeat of this request, so a tool with side effects stores it with what
    it creates and returns the existing thing when it sees the key again; `data_dir` is where
    tools may keep local state.
    """

    call_id: str
    user_id: str | None
    app_context: Mapping[str, Any]
    log: Logger
    idempotency_key: str
    data_dir: Path
