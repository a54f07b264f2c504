"""The import layering of the package: no lower layer imports a higher one.

A part of `voice_agent` is a top-level module or subpackage. The table says which other parts
each may import (function-level imports included); `docs/architecture.md` draws the same layers.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "voice_agent"

# Imported by anything: configuration, logging, errors, the room contract, shared plumbing.
FOUNDATION = frozenset(
    {"voice_agent", "settings", "logging", "exceptions", "protocol", "backoff", "metrics"}
    | {"chat", "profile", "datadir", "database_url", "tracing", "closing", "sqlite_wal"}
)
MAY_IMPORT: dict[str, frozenset[str]] = {
    **{part: FOUNDATION for part in FOUNDATION},
    "testing": FOUNDATION,  # the scripted OpenAI-compatible server and test tones
    "pipeline": FOUNDATION,
    "providers": FOUNDATION | {"pipeline", "testing"},
    "tooling": FOUNDATION,
    "call_record": FOUNDATION | {"tooling"},
    "agent": FOUNDATION | {"pipeline", "providers", "tooling", "call_record"},
    "postcall": FOUNDATION | {"providers", "tooling", "call_record"},
    "server": FOUNDATION | {"call_record", "postcall"},
    "devstack": FOUNDATION | {"postcall"},
    "caller": FOUNDATION | {"pipeline", "agent"},  # a test driver of the agent
    # `voice-agent chat` and conversation tests (text sessions, scripted models; a voice test
    # composes a stack of its own, as the command line does)
    "textmode": FOUNDATION
    | {"pipeline", "providers", "tooling", "call_record", "agent", "testing", "caller"}
    | {"server", "devstack"},
    "cli": FOUNDATION
    | {"pipeline", "providers", "tooling", "call_record", "agent", "postcall", "server"}
    | {"devstack", "caller", "textmode"},
    "__main__": frozenset({"cli"}),
}


def _part(module: str) -> str:
    names = module.split(".")
    return names[1] if len(names) > 1 else names[0]


@functools.cache
def _imports() -> list[tuple[str, str, str]]:
    """(importing part, imported part, where) for every internal import in the package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            for target in targets:
                if target == "voice_agent" or target.startswith("voice_agent."):
                    where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                    found.append((_part(module), _part(target), where))
    return found


def test_every_part_of_the_package_has_a_layer() -> None:
    """A new top-level module or subpackage gets its place in the table."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert modules | packages <= set(MAY_IMPORT)


@pytest.mark.parametrize("part", sorted(MAY_IMPORT))
def test_no_part_imports_a_higher_layer(part: str) -> None:
    """Each part imports only the parts below it (and itself)."""
    wrong = [
        f"{where} imports {target}"
        for source, target, where in _imports()
        if source == part and target != part and target not in MAY_IMPORT[part]
    ]
    assert wrong == []
