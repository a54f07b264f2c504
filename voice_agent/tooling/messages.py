"""What the model is told after each tool request (the content of the tool message).

Always one JSON object. On success: `{"ok": true, "result": ...}`. Otherwise `"ok": false`, the
`outcome`, a `message` saying plainly what happened, and `tell_user` saying what the model should
tell the user, so a failure is never met with silence.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic_core import to_jsonable_python

MAX_CONTENT_CHARS = 6000


def _dump(payload: dict[str, Any]) -> str:
    return json.dumps(payload, ensure_ascii=False, default=str)


def _spoken(tool: str) -> str:
    return " ".join(tool.replace("_", " ").replace("-", " ").replace(".", " ").split())


def _offer(fallback: str | None, otherwise: str) -> str:
    return f"offer this instead: {fallback}" if fallback else otherwise


def failure(outcome: str, message: str, tell_user: str) -> str:
    """A request that produced no result."""
    return _dump({"ok": False, "outcome": outcome, "message": message, "tell_user": tell_user})


def ok(result: Any) -> str:
    """A result (cut short, saying so, when it would crowd the model's context)."""
    value = to_jsonable_python(result, fallback=str)
    text = _dump({"ok": True, "result": value})
    if len(text) <= MAX_CONTENT_CHARS:
        return text
    inner = json.dumps(value, ensure_ascii=False, default=str)[: MAX_CONTENT_CHARS - 200]
    return _dump({"ok": True, "result_truncated": inner, "note": "the result was cut short"})


def duplicate_done(result: Any) -> str:
    """The same request already ran in this call (or earlier); its result, not a new run."""
    value = to_jsonable_python(result, fallback=str)
    return _dump(
        {
            "ok": True,
            "duplicate": True,
            "result": value,
            "message": "This exact request was already carried out; this is its result. "
            "It was not done a second time.",
            "tell_user": "Use this result; do not request it again.",
        }
    )


def duplicate_busy(tool: str) -> str:
    """The same request is running right now."""
    return failure(
        "duplicate",
        f"This exact {_spoken(tool)} request is already being carried out; it was not started "
        "again.",
        "Tell the user it is in progress; do not request it again.",
    )


def limit(scope: str, maximum: int) -> str:
    """Over the per-turn or per-call limit."""
    return failure(
        "limit",
        f"Tool call limit reached ({maximum} per {scope}); this call was not run.",
        "Stop calling tools now and answer the user with what you already know."
        if scope == "turn"
        else "No more tools can be used on this call; help the user with what you know.",
    )


def refused(tool: str) -> str:
    """Unknown or not allowed (the model is not told which, so the allowlist stays private)."""
    return failure(
        "refused",
        f"There is no tool named '{tool}' available to you; nothing was run.",
        "Do not call it again. Tell the user you cannot do that here.",
    )


def invalid(message: str) -> str:
    """The arguments failed validation."""
    return failure(
        "invalid",
        f"{message}. Nothing was run.",
        "Call again with corrected arguments, or ask the user for the missing details.",
    )


def breaker_open(tool: str, fallback: str | None) -> str:
    """The tool's circuit breaker is open."""
    return failure(
        "breaker_open",
        f"The {_spoken(tool)} system is unavailable right now; nothing was run.",
        f"Tell the user the {_spoken(tool)} system is unavailable right now and "
        + _offer(fallback, "offer to try again later."),
    )


def declined(tool: str, *, timed_out: bool) -> str:
    """The user declined, or did not confirm in time."""
    what = "did not confirm in time" if timed_out else "declined"
    return failure(
        "declined",
        f"The user {what}; the {_spoken(tool)} request was not carried out.",
        "Acknowledge that nothing was done and ask what they would like instead.",
    )


def timeout(tool: str, seconds: float, fallback: str | None) -> str:
    """The tool ran past its time limit and was stopped."""
    return failure(
        "timeout",
        f"The {_spoken(tool)} request did not finish within {seconds:g} s and was stopped.",
        "Tell the user the system did not answer in time and "
        + _offer(fallback, "offer to try again."),
    )


def error(tool: str, fallback: str | None, reported: str | None = None) -> str:
    """The tool raised; `reported` is a `ToolReportedError` message meant for the model."""
    if reported is not None:
        return failure("error", reported, "Explain this to the user briefly.")
    return failure(
        "error",
        f"The {_spoken(tool)} request failed.",
        "Tell the user it did not work and " + _offer(fallback, "offer to try again later."),
    )


def cancelled(tool: str) -> str:
    """A run cancelled because the user interrupted (per the tool's on_interrupt policy)."""
    return failure(
        "cancelled",
        f"The {_spoken(tool)} request was cancelled when the user interrupted; it may not "
        "have been carried out.",
        "Do not assume it happened. Ask the user whether they still want it.",
    )


def skipped(tool: str, reason: str) -> str:
    """A call from a generation that was interrupted before it was committed."""
    return failure(
        "skipped",
        f"The {_spoken(tool)} request was not run: {reason}.",
        "Do not assume it happened. Listen to the user and call it again only if still needed.",
    )


def started(tool: str) -> str:
    """A background tool is running; its result comes in a later message."""
    return _dump(
        {
            "ok": True,
            "started": True,
            "message": f"The {_spoken(tool)} request has started and runs in the background; "
            "its result will arrive in a later message.",
            "tell_user": "Tell the user it has started and that you will tell them the result "
            "when it is ready. Do not request it again.",
        }
    )


def background_result(tool: str, content: str) -> str:
    """What became of a background tool started earlier in the call (`content`: its message)."""
    try:
        outcome: Any = json.loads(content)
    except ValueError:
        outcome = content
    return _dump(
        {
            "background_result": True,
            "message": f"The {_spoken(tool)} request started earlier has ended; here is what "
            "became of it.",
            "outcome": outcome,
            "tell_user": "Tell the user what became of it now, briefly.",
        }
    )
