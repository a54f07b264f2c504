"""Developer-registered tools behind guards: allowlist, validation, time limits, circuit
breakers, confirmation, idempotency, call limits and audit.

Write a tool with `@tool` in a module under `tools/`, or declare an MCP server in the agent
profile; load both with `voice_agent.tooling.sources.ToolSources` (kept out of this package's
namespace so importing a tool module does not import the MCP SDK); run the model's tool calls
through one `ToolRuntime` per call. See docs/tool-author-guide.md.
"""

from voice_agent.exceptions import (
    ToolArgumentsError,
    ToolDefinitionError,
    ToolError,
    ToolLoadError,
    ToolReportedError,
    ToolSourceError,
)
from voice_agent.tooling.breakers import BreakerBoard, BreakerPass, BreakerState
from voice_agent.tooling.confirm import ConfirmationAnswer, ConfirmationRequest, Confirmer
from voice_agent.tooling.context import ToolContext
from voice_agent.tooling.decorator import tool
from voice_agent.tooling.ledger import (
    IdempotencyLedger,
    LedgerBusy,
    LedgerClaim,
    LedgerDone,
)
from voice_agent.tooling.messages import cancelled as cancelled_content
from voice_agent.tooling.policy import ToolPolicy
from voice_agent.tooling.redact import REDACTED, redact
from voice_agent.tooling.registry import ToolRegistry
from voice_agent.tooling.runtime import ToolResult, ToolRuntime
from voice_agent.tooling.spec import ToolSpec

__all__ = [
    "REDACTED",
    "BreakerBoard",
    "BreakerPass",
    "BreakerState",
    "ConfirmationAnswer",
    "ConfirmationRequest",
    "Confirmer",
    "IdempotencyLedger",
    "LedgerBusy",
    "LedgerClaim",
    "LedgerDone",
    "ToolArgumentsError",
    "ToolContext",
    "ToolDefinitionError",
    "ToolError",
    "ToolLoadError",
    "ToolPolicy",
    "ToolRegistry",
    "ToolReportedError",
    "ToolResult",
    "ToolRuntime",
    "ToolSourceError",
    "ToolSpec",
    "cancelled_content",
    "redact",
    "tool",
]
