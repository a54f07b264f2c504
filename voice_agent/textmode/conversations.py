"""Conversation test files: what the caller says and what the agent must do, in TOML.

    name = "A VPN ticket, confirmed"
    profile = "../../deploy/profiles/support.toml"  # relative to this file (default:
    tools_path = "../../tools"                      # VOICE_AGENT_PROFILE / _TOOLS_PATH)

    [[turns]]
    user = "My VPN is down, please open a ticket."  # typed in text mode; in voice mode spoken
    # audio = "vpn.wav"                              # (espeak-ng from `user`, or this WAV)
    confirm = "yes"                                  # confirmations in this turn: yes | no

    [[turns.model]]          # the scripted model's completions for this turn, in order
    text = "I'll open a ticket."
    tool_calls = [{ name = "create_ticket", arguments = { title = "VPN down" } }]
    [[turns.model]]
    text = "Your ticket is open."

    [turns.expect]
    tools = [{ name = "create_ticket", arguments = { title = "VPN down" }, outcome = "ok" }]
    refused = []                          # tools asked for that the runtime must refuse
    reply_contains = ["ticket is open"]   # substrings of the agent's reply (any case)
    reply_matches = ["(?i)ticket"]        # regular expressions it must match
    reply_excludes = ["sorry"]            # substrings it must not contain
    judge = "The agent says the ticket is open."  # asked of the model, when a key is set

A file whose turns script the model (`[[turns.model]]`) runs against the scripted
OpenAI-compatible server, unless the run asks for the configured model; then the `model`
entries are ignored.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voice_agent.exceptions import ConfigError
from voice_agent.testing.openai_script import ChatReply, ScriptedToolCall
from voice_agent.tooling.audit import ToolOutcome


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScriptedCall(_Strict):
    """A tool call the scripted model makes."""

    name: str = Field(min_length=1, max_length=128)
    arguments: dict[str, Any] = Field(default_factory=dict)


class ScriptedCompletion(_Strict):
    """One completion of the scripted model."""

    text: str = ""
    tool_calls: tuple[ScriptedCall, ...] = ()

    def reply(self) -> ChatReply:
        """As the scripted server sends it."""
        calls = [
            ScriptedToolCall(name=c.name, arguments=json.dumps(c.arguments))
            for c in self.tool_calls
        ]
        return ChatReply(text=self.text, tool_calls=calls)


class ExpectedTool(_Strict):
    """A tool request the turn must make: its name, a subset of its arguments, its outcome."""

    name: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict)
    outcome: ToolOutcome | None = None


class Expectations(_Strict):
    """What one turn's answer must show."""

    tools: tuple[ExpectedTool, ...] = ()
    no_tools: bool = False
    refused: tuple[str, ...] = ()
    reply_contains: tuple[str, ...] = ()
    reply_matches: tuple[str, ...] = ()
    reply_excludes: tuple[str, ...] = ()
    judge: str | None = Field(None, min_length=1, max_length=2000)

    @field_validator("reply_matches")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"not a regular expression: {pattern!r} ({e})") from None
        return patterns


class Turn(_Strict):
    """One thing the caller says, and what must follow."""

    user: str = Field(min_length=1, max_length=4000)
    audio: Path | None = None
    confirm: Literal["yes", "no"] | None = None
    model: tuple[ScriptedCompletion, ...] = ()
    expect: Expectations = Expectations()


class ConversationFile(_Strict):
    """One conversation test."""

    name: str | None = Field(None, max_length=200)
    profile: Path | None = None
    tools_path: Path | None = None
    turns: tuple[Turn, ...] = Field(min_length=1)
    path: Path = Path("-")

    @property
    def title(self) -> str:
        """Its name, or its file's."""
        return self.name or self.path.stem

    @property
    def scripted(self) -> bool:
        """Whether it scripts the model."""
        return any(turn.model for turn in self.turns)

    def chat_replies(self) -> list[ChatReply]:
        """The scripted model's completions, in the order the turns need them."""
        return [c.reply() for turn in self.turns for c in turn.model]


def load_conversation(path: Path) -> ConversationFile:
    """Read and validate a conversation file; paths in it become relative to its directory."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read conversation {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"conversation {path} is not valid TOML: {e}") from e
    try:
        conversation = ConversationFile.model_validate({**data, "path": path})
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'file'}: {item['msg']}"
            for item in e.errors(include_url=False)
        )
        raise ConfigError(f"conversation {path} is invalid: {problems}") from None
    here = path.resolve().parent
    return conversation.model_copy(
        update={
            "profile": here / conversation.profile if conversation.profile else None,
            "tools_path": here / conversation.tools_path if conversation.tools_path else None,
            "turns": tuple(
                t.model_copy(update={"audio": here / t.audio}) if t.audio else t
                for t in conversation.turns
            ),
        }
    )


def conversation_files(paths: list[Path]) -> list[Path]:
    """The files named, and the `*.toml` files under the directories named, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.rglob("*.toml"))
        else:
            found.append(path)
    return found
